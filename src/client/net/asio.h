// Boost.Asio/Beast names the client's network code shares (Boost 1.74 and
// later; built with BOOST_ASIO_NO_DEPRECATED and BOOST_BEAST_USE_STD_STRING_VIEW).
#pragma once

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

namespace tandem::client::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

// `co_await op(..., use_ec(ec))`: the error lands in `ec` instead of throwing.
constexpr auto use_ec = [](beast::error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); };

}  // namespace tandem::client::net
