// The generated table of embedded files (see embed_assets.cmake).
#pragma once

#include <span>

#include "webui/assets.h"

namespace tandem::webui {

// Every file of web/dist, in path order. Defined in the generated
// webui_asset_table.cpp.
std::span<const Asset> asset_table();

}  // namespace tandem::webui
