// StopMatcher: stop strings across pushes, overlaps, UTF-8, and what is
// released at the end of the stream.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "engine/sampler.h"

namespace tandem {
namespace {

struct Streamed {
  std::string text;  // everything emitted, flush included
  bool stopped = false;
};

// Feeds `pieces` one by one, as a detokenizer would, then flushes.
Streamed stream(StopMatcher& matcher, const std::vector<std::string>& pieces) {
  Streamed out;
  for (const std::string& piece : pieces) {
    const StopMatcher::Result r = matcher.push(piece);
    out.text += r.text;
    if (r.stopped) out.stopped = true;
  }
  out.text += matcher.flush();
  return out;
}

std::vector<std::string> bytes_of(const std::string& text) {
  std::vector<std::string> out;
  for (char c : text) out.emplace_back(1, c);
  return out;
}

TEST(StopMatcher, NoStopStringsPassesEverythingThrough) {
  StopMatcher m({});
  const auto r = m.push("hello");
  EXPECT_EQ(r.text, "hello");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopSplitAcrossManyPushes) {
  StopMatcher m({"<|end|>"});
  EXPECT_EQ(m.push("Hello <").text, "Hello ");
  EXPECT_EQ(m.push("|e").text, "");
  EXPECT_EQ(m.push("n").text, "");
  const auto r = m.push("d|> trailing");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, OneByteAtATimeGivesTheSameTextAsOnePush) {
  const std::string text = "the cat sat on the mat. END here";
  StopMatcher whole({"END", "mat!"});
  StopMatcher bytes({"END", "mat!"});
  const Streamed a = stream(whole, {text});
  const Streamed b = stream(bytes, bytes_of(text));
  EXPECT_EQ(a.text, "the cat sat on the mat. ");
  EXPECT_TRUE(a.stopped);
  EXPECT_EQ(b.text, a.text);
  EXPECT_TRUE(b.stopped);
}

TEST(StopMatcher, HeldBackTextIsReleasedOnceItCannotMatch) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.push("ST").text, "");
  EXPECT_EQ(m.push("OR").text, "STOR");  // "STOR" can no longer begin "STOP"
  EXPECT_EQ(m.push("Y S").text, "Y ");
  EXPECT_EQ(m.flush(), "S");  // no false holdback at the end
}

TEST(StopMatcher, EarliestOfSeveralStopStringsWins) {
  StopMatcher m({"world", "lo w", "xyz"});
  const auto r = m.push("hello world");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "hel");
}

TEST(StopMatcher, OverlappingPrefixesStopAtTheShorter) {
  {
    StopMatcher m({"abc", "ab"});
    const Streamed s = stream(m, {"xa", "b", "c"});
    EXPECT_TRUE(s.stopped);
    EXPECT_EQ(s.text, "x");
  }
  {
    // "ab" is held while "abc" or "abd" could still follow, and released
    // once "e" rules both out.
    StopMatcher m({"abc", "abd"});
    EXPECT_EQ(m.push("xab").text, "x");
    const auto r = m.push("e");
    EXPECT_FALSE(r.stopped);
    EXPECT_EQ(r.text, "abe");
  }
  {
    // A partial match that fails must not hide a real one starting inside it.
    StopMatcher m({"aab"});
    const Streamed s = stream(m, bytes_of("xaaab"));
    EXPECT_TRUE(s.stopped);
    EXPECT_EQ(s.text, "xa");
  }
}

TEST(StopMatcher, StopAtTheVeryStart) {
  StopMatcher m({"\n\n"});
  const auto r = m.push("\n\nrest");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
}

TEST(StopMatcher, InputAfterStopIsIgnored) {
  StopMatcher m({"."});
  EXPECT_EQ(m.push("one. two").text, "one");
  const auto r = m.push("three");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, EmptyStopStringsAreIgnored) {
  StopMatcher m({"", "zz"});
  const auto r = m.push("abc");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.text, "abc");
}

TEST(StopMatcher, MultiByteUtf8StopSplitInsideCharacters) {
  // "。" is E3 80 82; "終わり" is nine bytes. Feed byte by byte, so the stop
  // strings arrive split inside characters.
  const std::string text = "答えは42です。終わり";
  StopMatcher m({"終わり"});
  const Streamed s = stream(m, bytes_of(text));
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.text, "答えは42です。");
  StopMatcher period({"。"});
  const Streamed p = stream(period, bytes_of(text));
  EXPECT_TRUE(p.stopped);
  EXPECT_EQ(p.text, "答えは42です");
}

TEST(StopMatcher, Utf8HoldbackNeverCutsACharacter) {
  // "é" (C3 A9) as a stop; text with other characters sharing the lead byte
  // C3 ("ç" = C3 A7). Every emitted piece must be whole UTF-8 characters.
  StopMatcher m({"é!"});
  std::string all;
  for (const std::string& piece : {std::string("garç"), std::string("on é"), std::string("t"),
                                   std::string("é"), std::string("!")}) {
    const auto r = m.push(piece);
    // A piece must not end in the middle of a two-byte character: its last
    // byte is ASCII or a continuation byte whose lead byte is in the piece.
    if (!r.text.empty()) {
      const unsigned char last = static_cast<unsigned char>(r.text.back());
      EXPECT_TRUE(last < 0x80 || (last & 0xC0) == 0x80) << r.text;
      EXPECT_NE(static_cast<unsigned char>(r.text.front()) & 0xC0, 0x80) << r.text;
    }
    all += r.text;
    if (r.stopped) break;
  }
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(all, "garçon ét");  // the last "é" belongs to the stop string
}

TEST(StopMatcher, RandomSplitsAgreeWithOnePush) {
  // Bounded: 300 random splittings of random texts over a small alphabet.
  std::mt19937_64 rng(77);
  const std::vector<std::string> stops = {"aba", "bb", "abab", "ca"};
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    for (int i = 0; i < 12; ++i) text += "abc"[rng() % 3];
    StopMatcher whole(stops);
    const Streamed expected = stream(whole, {text});
    // The reference: cut at the earliest occurrence of any stop string.
    size_t cut = std::string::npos;
    for (const auto& s : stops) cut = std::min(cut, text.find(s));
    EXPECT_EQ(expected.text, text.substr(0, cut)) << text;
    EXPECT_EQ(expected.stopped, cut != std::string::npos) << text;
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      const size_t len = 1 + rng() % 4;
      pieces.push_back(text.substr(i, len));
      i += len;
    }
    StopMatcher split(stops);
    const Streamed got = stream(split, pieces);
    EXPECT_EQ(got.text, expected.text) << text;
    EXPECT_EQ(got.stopped, expected.stopped) << text;
  }
}

}  // namespace
}  // namespace tandem
