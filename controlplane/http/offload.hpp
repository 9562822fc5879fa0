#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

// Shared by the two Beast translation units (server.cpp, guest_gateway.cpp); include it only
// from there: it pulls in Boost.Asio.
namespace litterbox::controlplane::http {

/// Runs the blocking `fn` on `pool` and resumes the calling coroutine on its own executor,
/// handing back fn's value (or rethrowing what it threw).
// `fn` is taken by reference: GCC 12 may destroy a non-trivial temporary of a co_await
// full-expression twice, so callers pass named functors or lambdas capturing only references.
template <class F>
boost::asio::awaitable<std::invoke_result_t<const F&>> offload(boost::asio::thread_pool& pool,
                                                               const F& fn) {
  namespace net = boost::asio;
  using value_type = std::invoke_result_t<const F&>;
  static_assert(!std::is_void_v<value_type>, "offload needs a value to hand back");
  std::optional<value_type> out;
  std::exception_ptr failure;
  co_await net::async_initiate<const net::use_awaitable_t<>&, void()>(
      [&pool, &fn, &out, &failure](auto handler) {
        net::post(pool, [&fn, &out, &failure, handler = std::move(handler)]() mutable {
          try {
            out.emplace(fn());
          } catch (...) {
            failure = std::current_exception();
          }
          auto ex = net::get_associated_executor(handler);
          net::dispatch(ex, std::move(handler));
        });
      },
      net::use_awaitable);
  if (failure) {
    std::rethrow_exception(failure);
  }
  co_return std::move(*out);
}

}  // namespace litterbox::controlplane::http
