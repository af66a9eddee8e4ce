#include "client/chat/conversation.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace tandem::client::chat {
namespace {

using nlohmann::json;

std::string error_of(json& params, const char* text) {
  try {
    apply_param_assignments(params, text);
  } catch (const ChatInputError& e) {
    return e.what();
  }
  return "accepted";
}

TEST(Params, SetsValidatesAndUnsets) {
  json p = json::object();
  apply_param_assignments(p, "temperature=0.7 top_p=0.9 max_tokens=32 stop=END seed=7");
  EXPECT_EQ(p, json({{"temperature", 0.7}, {"top_p", 0.9}, {"max_tokens", 32}, {"stop", "END"}, {"seed", 7}}));
  apply_param_assignments(p, "stop=[\"a\",\"b\"] temperature=default");
  EXPECT_FALSE(p.contains("temperature"));
  EXPECT_EQ(p["stop"], json({"a", "b"}));
  apply_param_assignments(p, "stop=\"two words\"");
  EXPECT_EQ(p["stop"], "two words");
}

TEST(Params, ErrorsNameTheKeyAndLeaveParamsUnchanged) {
  json p = {{"temperature", 0.5}};
  const json before = p;
  EXPECT_NE(error_of(p, "temperature=-1").find("temperature must be a number >= 0"), std::string::npos);
  EXPECT_NE(error_of(p, "top_p=0").find("top_p must be a number in (0, 1]"), std::string::npos);
  EXPECT_NE(error_of(p, "top_k=1.5").find("top_k"), std::string::npos);
  EXPECT_NE(error_of(p, "max_tokens=0").find("max_tokens"), std::string::npos);
  EXPECT_NE(error_of(p, "presence_penalty=3").find("[-2, 2]"), std::string::npos);
  EXPECT_NE(error_of(p, "warmth=1").find("unknown parameter 'warmth'"), std::string::npos);
  EXPECT_NE(error_of(p, "temperature").find("not key=value"), std::string::npos);
  EXPECT_NE(error_of(p, "temperature=hot").find("temperature"), std::string::npos);
  // All or nothing: the valid first assignment is not applied either.
  EXPECT_NE(error_of(p, "temperature=0.1 top_p=2").find("top_p"), std::string::npos);
  EXPECT_EQ(p, before);
}

TEST(Conversation, ResetKeepsTheSystemPrompt) {
  Conversation c("be brief");
  c.add("user", "hi");
  c.add("assistant", "hello");
  EXPECT_EQ(c.turns(), 1u);
  c.reset();
  ASSERT_EQ(c.messages().size(), 1u);
  EXPECT_EQ(c.messages()[0]["role"], "system");
  c.add("user", "unanswered");
  c.drop_last();
  EXPECT_EQ(c.messages().size(), 1u);
}

TEST(Conversation, SaveLoadRoundTrip) {
  const std::string path = testing::TempDir() + "tandem_chat_roundtrip.json";
  Conversation c("sys");
  c.add("user", "q \"quoted\" \xc3\xa9");
  c.add("assistant", "a\nb");
  apply_param_assignments(c.params(), "temperature=0 max_tokens=5");
  c.save(path);
  const Conversation loaded = Conversation::load(path);
  EXPECT_EQ(loaded.to_json(), c.to_json());
  std::remove(path.c_str());
}

TEST(Conversation, LoadRefusesFilesThatAreNotChats) {
  const std::string path = testing::TempDir() + "tandem_chat_bad.json";
  auto load_error = [&](const std::string& content) {
    std::ofstream(path) << content;
    try {
      Conversation::load(path);
    } catch (const ChatInputError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(load_error("nope").find("is not JSON"), std::string::npos);
  EXPECT_NE(load_error("{}").find("'messages' is missing"), std::string::npos);
  EXPECT_NE(load_error(R"({"messages":[{"role":"robot","content":"x"}]})").find("messages[0].role"), std::string::npos);
  EXPECT_NE(load_error(R"({"messages":[],"params":{"temperature":-3}})").find("temperature"), std::string::npos);
  std::remove(path.c_str());
  EXPECT_NE(load_error("").find("not JSON"), std::string::npos);
  std::remove(path.c_str());
  EXPECT_THROW(Conversation::load(path + ".missing"), ChatInputError);
}

}  // namespace
}  // namespace tandem::client::chat
