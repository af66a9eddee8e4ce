// Read-only memory map of a whole file. Model weights are used in place from
// the map; nothing is copied until a backend needs its own layout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tandem {

class MappedFile {
 public:
  // Throws tandem::Error naming the path when the file cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tandem
