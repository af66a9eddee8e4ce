#include <gtest/gtest.h>
#include "tokenizer/chat_template.h"
TEST(ChatTemplateLanguage, Smoke) {
  tandem::ChatTemplate t("{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}", "<s>", "</s>");
  EXPECT_EQ(t.render(nlohmann::json::parse(R"([{"role":"user","content":"hi"}])"), nullptr, false), "user:hi;");
}
