#include "tests/e2e/api/e2e_support.hpp"
#include "tests/e2e/clones/cloned_guests.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

namespace litterbox::e2e_test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

/// `n` random bytes (every byte value, so nothing in the path may treat the file as text).
std::string random_bytes(std::size_t n) {
  std::random_device seed;
  std::mt19937_64 gen(seed());
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    auto word = gen();
    for (std::size_t j = i; j < n && j < i + 8; ++j) {
      s[j] = static_cast<char>(word & 0xffU);
      word >>= 8U;
    }
  }
  return s;
}

TEST(RealGuestsCli, CreateExecCopySshAndRmWorkAgainstARealGuestAndLeaveNothing) {
  // The guest is a clone from the shared service (tests/e2e/clones).
  e2e_service* service = nullptr;
  ASSERT_NO_THROW(service = &cloned_guest_service());
  const temp_dir work("lb-e2e-cli");
  const auto home = work.path() / "home";
  fs::create_directories(home);
  // The CLI keeps minted keys under the user's data directory: here, inside the test's dir.
  const std::vector<std::string> env{
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home.string(),
      "XDG_DATA_HOME=" + (home / "data").string(), "TMPDIR=" + work.path().string(),
      "SANDBOX_SERVICE_URL=" + service->url(), "SANDBOX_SERVICE_TOKEN=" + e2e_service::token(),
      // A TCG boot on a busy two-core machine can outlast the CLI's 300 s default.
      "SANDBOX_SERVICE_TIMEOUT=1200"};
  const auto cli = [&](const std::vector<std::string>& args, std::chrono::seconds timeout = 120s) {
    std::vector<std::string> argv{LB_LITTERBOX_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_process(argv, env, timeout);
  };

  const auto created = cli({"create", "--json"}, 1300s);
  ASSERT_EQ(created.exit_code, 0) << created << "\nlitterboxd:\n"
                                  << service->process().output_tail();
  const json host = json::parse(created.out, nullptr, false);
  ASSERT_TRUE(host.is_object()) << created;
  const auto id = host.value("id", "");
  EXPECT_EQ(host.value("status", ""), "active") << created.out;
  EXPECT_EQ(recorded_create_path(*service, id), "clone");
  // The key went to a 0600 file; the printed host must not carry it.
  EXPECT_TRUE(!host.contains("private_key") || host["private_key"].is_null())
      << "the CLI printed the private key";
  const fs::path key_file = host.value("private_key_file", "");
  ASSERT_FALSE(key_file.empty()) << created.out;
  EXPECT_TRUE(fs::exists(key_file));
  EXPECT_EQ(fs::status(key_file).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  {
    SCOPED_TRACE("exec");
    const auto r = cli({"exec", id, "--", "cat", "/etc/os-release"});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_NE(r.out.find("Debian"), std::string::npos) << r;
    const auto failing = cli({"exec", id, "--", "sh", "-c", "echo out; echo err >&2; exit 7"});
    EXPECT_EQ(failing.exit_code, 7) << failing;
    EXPECT_EQ(failing.out, "out\n") << failing;
    EXPECT_EQ(failing.err, "err\n") << failing;
  }
  {
    SCOPED_TRACE("cp there and back");
    const auto data = random_bytes(1U << 20U);
    const auto there = work.path() / "there.bin";
    const auto back = work.path() / "back.bin";
    write_private_file(there, data);
    const auto up = cli({"cp", there.string(), id + ":/tmp/e2e.bin"});
    EXPECT_EQ(up.exit_code, 0) << up;
    const auto size = cli({"exec", id, "--", "stat", "-c", "%s", "/tmp/e2e.bin"});
    EXPECT_EQ(size.out, std::to_string(data.size()) + "\n") << size;
    const auto down = cli({"cp", id + ":/tmp/e2e.bin", back.string()});
    EXPECT_EQ(down.exit_code, 0) << down;
    const auto returned = read_whole_file(back);
    EXPECT_EQ(returned.size(), data.size());
    EXPECT_TRUE(returned == data) << "the file came back different";
  }
  {
    SCOPED_TRACE("ssh");
    const auto r = cli({"ssh", id, "--", "true"});
    EXPECT_EQ(r.exit_code, 0) << r;
    const auto code = cli({"ssh", id, "--", "exit", "3"});
    EXPECT_EQ(code.exit_code, 3) << code;
  }
  {
    SCOPED_TRACE("rm");
    const auto r = cli({"rm", id});
    EXPECT_EQ(r.exit_code, 0) << r << "\nlitterboxd:\n" << service->process().output_tail();
    EXPECT_FALSE(fs::exists(key_file)) << "rm kept the minted key";
    EXPECT_EQ(leftovers(*service, host), std::vector<std::string>{});
    const auto gone = cli({"get", id});
    EXPECT_NE(gone.exit_code, 0) << gone;
  }
}

}  // namespace
}  // namespace litterbox::e2e_test
