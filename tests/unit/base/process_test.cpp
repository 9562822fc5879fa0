#include "base/process.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <signal.h>
#include <string>
#include <thread>
#include <unistd.h>

namespace litterbox {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

/// True while `pid` is a live process (a zombie waiting for its reaper is dead).
bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) {
    return false;
  }
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

/// Waits (bounded) for the kernel to finish delivering a SIGKILL: death is asynchronous.
bool dies_within(pid_t pid, std::chrono::milliseconds bound) {
  const auto until = steady::now() + bound;
  while (alive(pid)) {
    if (steady::now() > until) {
      return false;
    }
    std::this_thread::yield();
  }
  return true;
}

TEST(RunProcess, CapturesStdoutStderrAndTheExitStatus) {
  const auto r = run_process({"sh", "-c", "echo out; echo err >&2; exit 3"}, 10s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_FALSE(r->timed_out);
}

TEST(RunProcess, ReportsAToolThatCannotBeStartedAsAnError) {
  const auto r = run_process({"litterbox-no-such-tool-anywhere"}, 10s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, std::errc::no_such_file_or_directory);
  EXPECT_NE(r.error().message.find("litterbox-no-such-tool-anywhere"), std::string::npos);
}

TEST(RunProcess, KillsAToolThatIgnoresSigtermWithItsWholeProcessGroupAtTheDeadline) {
  // The tool ignores SIGTERM, starts a helper that would outlive it, prints the helper's pid
  // and waits forever.
  const auto started = steady::now();
  const auto r =
      run_process({"bash", "-c", "trap '' TERM; sleep 1000 & echo $!; wait; sleep 1000"}, 500ms);
  const auto took = steady::now() - started;
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->exit_code, 128 + SIGKILL);
  EXPECT_GE(took, 500ms);
  EXPECT_LT(took, 5s);
  const pid_t helper = std::atoi(r->out.c_str());
  ASSERT_GT(helper, 1) << r->out;
  EXPECT_TRUE(dies_within(helper, 5000ms)) << "the helper of a timed-out tool survived";
}

TEST(RunProcess, TimesOutAToolThatClosedItsOutputAndNeverExits) {
  // No more output to wait for, but the process lives on: the deadline must still hold.
  const auto started = steady::now();
  const auto r = run_process({"bash", "-c", "exec >&- 2>&-; exec sleep 1000"}, 500ms);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->timed_out);
  EXPECT_LT(steady::now() - started, 5s);
}

TEST(RunProcess, ReturnsAsSoonAsAToolThatClosedItsOutputExits) {
  const auto started = steady::now();
  const auto r = run_process({"bash", "-c", "exec >&- 2>&-; exit 7"}, 30s);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(r->exit_code, 7);
  EXPECT_LT(steady::now() - started, 10s);
}

TEST(RunProcess, ChildSeesNoSecretOfTheParentEnvironment) {
  ASSERT_EQ(::setenv("DATABASE_URL", "postgresql://user:hunter2@db/litterbox", 1), 0);
  ASSERT_EQ(::setenv("SERVICE_TOKENS", "token-secret-1,token-secret-2", 1), 0);
  ASSERT_EQ(::setenv("LB_TEST_NAMED", "handed-on", 1), 0);
  const auto plain = run_process({"env"}, 10s);
  const auto named = run_process({"env"}, process_options{10s, {"LB_TEST_NAMED"}});
  ::unsetenv("DATABASE_URL");
  ::unsetenv("SERVICE_TOKENS");
  ::unsetenv("LB_TEST_NAMED");
  ASSERT_TRUE(plain && named);
  for (const auto* r : {&*plain, &*named}) {
    EXPECT_EQ(r->out.find("hunter2"), std::string::npos) << r->out;
    EXPECT_EQ(r->out.find("token-secret"), std::string::npos) << r->out;
    EXPECT_NE(("\n" + r->out).find("\nPATH=/"), std::string::npos) << r->out;
    EXPECT_NE(r->out.find("LANG=C.UTF-8\n"), std::string::npos) << r->out;
    EXPECT_NE(r->out.find("LC_ALL=C.UTF-8\n"), std::string::npos) << r->out;
  }
  EXPECT_EQ(plain->out.find("LB_TEST_NAMED"), std::string::npos) << plain->out;
  EXPECT_NE(named->out.find("LB_TEST_NAMED=handed-on\n"), std::string::npos) << named->out;
}

TEST(RunProcess, ChildInheritsNoDescriptorOfTheParentBeyondItsOwnThree) {
  // A descriptor some library opened without O_CLOEXEC (e.g. a database socket).
  const int fd = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  const int leaked = ::dup2(fd, 57);
  ASSERT_EQ(leaked, 57);
  const auto r =
      run_process({"sh", "-c", "test -e /proc/self/fd/57 && echo leaked || echo closed"}, 10s);
  ::close(leaked);
  ::close(fd);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out, "closed\n");
}

}  // namespace
}  // namespace litterbox
