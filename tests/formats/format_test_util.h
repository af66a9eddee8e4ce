// Helpers for the format tests: byte builders for hand-made images, temporary
// folders and error-message checks.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace tandem::test {

// Little-endian byte image under construction.
struct Bytes {
  std::vector<uint8_t> v;

  template <typename T>
  Bytes& put(T x) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &x, sizeof(T));
    v.insert(v.end(), b, b + sizeof(T));
    return *this;
  }
  Bytes& raw(std::string_view s) {
    v.insert(v.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& str(std::string_view s) {
    put<uint64_t>(s.size());
    return raw(s);
  }
  Bytes& pad_to(size_t alignment) {
    while (v.size() % alignment != 0) v.push_back(0);
    return *this;
  }
  Bytes& zeros(size_t n) {
    v.insert(v.end(), n, 0);
    return *this;
  }
  size_t size() const { return v.size(); }
};

// GGUF building blocks.
inline Bytes gguf_header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
  Bytes b;
  b.raw("GGUF").put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  return b;
}
inline void gguf_kv_u32(Bytes& b, std::string_view key, uint32_t v) { b.str(key).put<uint32_t>(4).put<uint32_t>(v); }
inline void gguf_kv_str(Bytes& b, std::string_view key, std::string_view v) { b.str(key).put<uint32_t>(8).str(v); }
// `ne` innermost first, as in the file.
inline void gguf_tensor_info(Bytes& b, std::string_view name, std::vector<uint64_t> ne, uint32_t type,
                             uint64_t offset) {
  b.str(name).put<uint32_t>(static_cast<uint32_t>(ne.size()));
  for (uint64_t d : ne) b.put<uint64_t>(d);
  b.put<uint32_t>(type).put<uint64_t>(offset);
}

// A folder under the system temp dir, removed with its contents at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tandem-formats-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string file(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const void* data, size_t n) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  if (!out) throw std::runtime_error("cannot write test file " + path);
}
inline void write_file(const std::string& path, std::string_view text) { write_file(path, text.data(), text.size()); }

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs `f`, which must throw tandem::Error with a one-line message containing
// every one of `parts`. Returns the message.
template <typename F>
std::string expect_error(F&& f, std::initializer_list<std::string_view> parts,
                         const char* where_file = __builtin_FILE(), int where_line = __builtin_LINE()) {
  SCOPED_TRACE(testing::Message() << "expect_error called at " << where_file << ":" << where_line);
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
    for (std::string_view p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return msg;
  }
  ADD_FAILURE() << "expected tandem::Error";
  return {};
}

}  // namespace tandem::test
