#include <boost/asio/error.hpp>
#include <gtest/gtest.h>

#include "client/net/net_error.h"
#include "client/net/url.h"
#include "client/net/zstd_codec.h"

namespace tandem::client::net {
namespace {

TEST(BackendUrl, AcceptsTheWaysUsersWriteABackend) {
  EXPECT_EQ(parse_backend_url("ws://gpu-box:9000").ws(), "ws://gpu-box:9000/ws");
  EXPECT_EQ(parse_backend_url("ws://gpu-box:9000/ws").ws(), "ws://gpu-box:9000/ws");
  EXPECT_EQ(parse_backend_url("http://gpu-box:9000/").http(), "http://gpu-box:9000");
  EXPECT_EQ(parse_backend_url("gpu-box").ws(), "ws://gpu-box:8765/ws");
  EXPECT_EQ(parse_backend_url("9001").ws(), "ws://127.0.0.1:9001/ws");
  EXPECT_EQ(parse_backend_url(" 10.0.0.2:80 ").host_port(), "10.0.0.2:80");
  const BackendUrl v6 = parse_backend_url("ws://[::1]:8765/custom");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.ws(), "ws://[::1]:8765/custom");
}

TEST(BackendUrl, RefusesWithAReason) {
  auto message = [](const char* text) {
    try {
      parse_backend_url(text);
    } catch (const NetError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message("wss://h:1").find("TLS"), std::string::npos);
  EXPECT_NE(message("ftp://h:1").find("unknown scheme 'ftp'"), std::string::npos);
  EXPECT_NE(message("h:0").find("port"), std::string::npos);
  EXPECT_NE(message("h:70000").find("port"), std::string::npos);
  EXPECT_NE(message("h:12ab").find("port"), std::string::npos);
  EXPECT_NE(message("").find("empty"), std::string::npos);
  EXPECT_NE(message("ws://:8765").find("no host"), std::string::npos);
}

TEST(NetErrors, ReadAsSentences) {
  EXPECT_NE(describe_network_error(boost::asio::error::connection_refused, "h:1").find("nothing is listening at h:1"),
            std::string::npos);
  EXPECT_NE(describe_backend_error("overloaded", "queue full").find("overloaded"), std::string::npos);
  EXPECT_NE(describe_backend_error("context_length_exceeded", "x").find("/reset"), std::string::npos);
  EXPECT_NE(describe_backend_error("unauthorized", "").find("--api-key"), std::string::npos);
}

TEST(Zstd, RoundTripAndLimits) {
  const std::string text(5000, 'a');
  const std::string frame = zstd_compress(text);
  EXPECT_LT(frame.size(), text.size());
  EXPECT_EQ(zstd_decompress(frame), text);
  EXPECT_THROW(zstd_decompress(frame, 100), NetError);
  EXPECT_THROW(zstd_decompress("not a frame"), NetError);
}

}  // namespace
}  // namespace tandem::client::net
