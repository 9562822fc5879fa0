// Templates and clones on the libvirt driver (TCG): one template build, then N sequential
// clones restore → ready, apply_login on live clones, memory and disk per clone, a cold boot
// of the same spec for comparison, and what a per-clone copy of the state file would cost.
//   clone_bench <work-dir> <base-disk> <kernel> <initrd> [clones] [live] [cold]
// Prints Markdown. Needs root and libvirtd; domains carry the owner tag litterbox-clone-bench.
#include "base/secret.hpp"
#include "hypervisor/libvirt/libvirt_driver.hpp"
#include "hypervisor/ssh/keys.hpp"

#include <spdlog/cfg/env.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <numeric>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
using namespace litterbox;
using namespace litterbox::hypervisor;
using std::chrono::steady_clock;

namespace {

double seconds_since(steady_clock::time_point t0) {
  return std::chrono::duration<double>(steady_clock::now() - t0).count();
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string uuid_like(int n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "0190a3b4-5c6d-7e8f-9a0b-%012d", n);
  return buf;
}

struct stats {
  double p50, p99, min, max, mean, sd;
};

stats summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto at = [&](double q) {
    const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
    return v[std::min(i, v.size() - 1)];
  };
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  double var = 0;
  for (const double x : v) {
    var += (x - mean) * (x - mean);
  }
  return {at(0.5),  at(0.99), v.front(),
          v.back(), mean,     std::sqrt(var / static_cast<double>(v.size()))};
}

// Proportional set size of the QEMU process of domain `name` (shared pages split among the
// processes mapping them), and its resident size, in MiB.
std::pair<double, double> qemu_memory_mib(const std::string& name) {
  std::ifstream pidfile("/run/libvirt/qemu/" + name + ".pid");
  long pid = 0;
  pidfile >> pid;
  std::ifstream rollup("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string key;
  double rss = 0;
  double pss = 0;
  while (rollup >> key) {
    double kib = 0;
    if (key == "Rss:" && rollup >> kib) {
      rss = kib / 1024;
    } else if (key == "Pss:" && rollup >> kib) {
      pss = kib / 1024;
    }
  }
  return {pss, rss};
}

double allocated_mib(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? static_cast<double>(st.st_blocks) * 512 / 1048576 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr,
                 "usage: clone_bench <work-dir> <base-disk> <kernel> <initrd> [clones] [live] "
                 "[cold]\n");
    return 2;
  }
  // The driver logs the phases of each build and restore at debug level, on stderr.
  spdlog::set_level(spdlog::level::debug);
  // SPDLOG_LEVEL=trace adds the time of every guest-agent command.
  spdlog::cfg::load_env_levels();
  const fs::path work = argv[1];
  const int clones = argc > 5 ? std::stoi(argv[5]) : 20;
  const int live_count = argc > 6 ? std::stoi(argv[6]) : 4;
  const bool cold_boot = argc > 7 ? std::stoi(argv[7]) != 0 : true;
  fs::create_directories(work);
  fs::permissions(work, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  fixed_base_image images(argv[2]);
  libvirt_config cfg;
  cfg.accel = "tcg";
  cfg.state_dir = work / "state";
  cfg.kernel = argv[3];
  cfg.initrd = argv[4];
  cfg.owner = "litterbox-clone-bench";
  std::vector<clone_timing> timings;  // only the bench's own thread calls the driver
  cfg.on_timing = [&](const clone_timing& t) { timings.push_back(t); };
  libvirt_driver driver(cfg, images);
  const std::string digest = driver.prepare_image("bench").value();
  const auto login = generate_ed25519("bench").value();

  auto spec_for = [&](int n) {
    vm_spec s;
    s.host_id = uuid_like(n);
    s.name = "sb-" + s.host_id.substr(s.host_id.size() - 12);
    s.image = "bench";
    s.image_digest = digest;
    s.cpus = 1;
    s.memory_mib = 1024;
    s.ssh_username = "agent";
    s.authorized_keys = {login.public_line};
    s.env = {{"BENCH", "1"}};
    s.host_key = generate_ed25519("").value();
    s.ready_token = random_hex(16);
    s.ssh_host = "127.0.0.1";
    s.ssh_port = free_port();
    return s;
  };

  template_spec t;
  t.template_id = uuid_like(999000);
  t.guest = spec_for(999000);
  t.guest.name = "lbt-bench";
  t.guest.authorized_keys.clear();
  t.guest.env.clear();
  auto t0 = steady_clock::now();
  if (auto built = driver.build_template(t, steady_clock::now() + std::chrono::minutes(15));
      !built) {
    std::fprintf(stderr, "build_template failed: %s\n", built.error().message.c_str());
    return 1;
  }
  const double build_s = seconds_since(t0);
  const fs::path state = driver.template_dir(t.template_id) / "state.sav";
  const double state_mib = static_cast<double>(fs::file_size(state)) / 1048576;
  const double template_disk_mib = allocated_mib(driver.template_dir(t.template_id) / "disk.qcow2");

  // The alternative to the FIFO: a real per-clone state file (no reflink on ext4).
  const fs::path copy = work / "state-copy.sav";
  t0 = steady_clock::now();
  fs::copy_file(state, copy, fs::copy_options::overwrite_existing);
  const double copy_s = seconds_since(t0);
  fs::remove(copy);

  timings.clear();
  std::vector<double> restore_s;
  int failures = 0;
  for (int i = 0; i < clones; ++i) {
    const auto s = spec_for(i + 1);
    t0 = steady_clock::now();
    auto r = driver.restore_clone(t.template_id, s, steady_clock::now() + std::chrono::minutes(2));
    const double took = seconds_since(t0);
    if (!r) {
      ++failures;
      std::fprintf(stderr, "restore %d failed: %s\n", i, r.error().message.c_str());
    } else {
      restore_s.push_back(took);
    }
    (void)driver.destroy(s.host_id);
  }

  const std::vector<clone_timing> restore_timings = timings;

  // One cold boot of the same spec, for comparison (the path clones replace), while no clone
  // runs.
  auto cold = spec_for(700);
  t0 = steady_clock::now();
  double cold_s = -1;
  std::pair<double, double> cold_memory{0, 0};
  if (cold_boot) {
    if (driver.create_vm(cold) &&
        driver.wait_ready(cold, steady_clock::now() + std::chrono::minutes(10))) {
      cold_s = seconds_since(t0);
    }
    cold_memory = qemu_memory_mib(cold.name);
    (void)driver.destroy(cold.host_id);
  }

  std::vector<vm_spec> live;
  std::vector<double> login_s;
  std::vector<std::pair<double, double>> memory;
  std::vector<double> disk;
  for (int i = 0; i < live_count; ++i) {
    auto s = spec_for(500 + i);
    s.authorized_keys.clear();  // a warm-pool member: no login until claimed
    s.env.clear();
    if (auto r =
            driver.restore_clone(t.template_id, s, steady_clock::now() + std::chrono::minutes(2));
        !r) {
      std::fprintf(stderr, "live restore %d failed: %s\n", i, r.error().message.c_str());
      continue;
    }
    live.push_back(s);
  }
  timings.clear();
  for (auto& s : live) {
    for (int round = 0; round < 5; ++round) {
      s.authorized_keys = {login.public_line};
      s.env = {{"ROUND", std::to_string(round)}, {"TOKEN", random_hex(16)}};
      t0 = steady_clock::now();
      if (auto r = driver.apply_login(s, steady_clock::now() + std::chrono::seconds(30)); r) {
        login_s.push_back(seconds_since(t0));
      } else {
        std::fprintf(stderr, "apply_login failed: %s\n", r.error().message.c_str());
      }
    }
    memory.push_back(qemu_memory_mib(s.name));
    disk.push_back(allocated_mib(driver.host_dir(s.host_id) / "disk.qcow2"));
  }

  for (const auto& s : live) {
    (void)driver.destroy(s.host_id);
  }
  (void)driver.destroy_template(t.template_id);

  std::printf("| metric | value |\n|---|---|\n");
  std::printf("| template build (cold boot + scrub + save) | %.1f s |\n", build_s);
  std::printf("| template state file | %.0f MiB |\n", state_mib);
  std::printf("| template disk (frozen overlay, allocated) | %.0f MiB |\n", template_disk_mib);
  std::printf("| copying the state file once (what a per-clone file would cost) | %.2f s |\n",
              copy_s);
  if (!restore_s.empty()) {
    const auto r = summarize(restore_s);
    std::printf(
        "| clone restore → ready, n=%zu (%d failed) | p50 %.2f s, p99 %.2f s (min %.2f, max "
        "%.2f, mean %.2f ± %.2f) |\n",
        restore_s.size(), failures, r.p50, r.p99, r.min, r.max, r.mean, r.sd);
  }
  if (!login_s.empty()) {
    const auto l = summarize(login_s);
    std::printf(
        "| apply_login + readiness on a live clone, n=%zu | p50 %.0f ms, p99 %.0f ms (min %.0f, "
        "max %.0f, mean %.0f ± %.0f) |\n",
        login_s.size(), l.p50 * 1000, l.p99 * 1000, l.min * 1000, l.max * 1000, l.mean * 1000,
        l.sd * 1000);
  }
  // Where the time went: the p50 of each phase (the phases' p50s need not add up to the
  // total's).
  const auto phase = [](const std::vector<clone_timing>& ts, long long clone_timing::*field) {
    std::vector<double> v;
    for (const auto& one : ts) {
      v.push_back(static_cast<double>(one.*field));
    }
    return v.empty() ? 0.0 : summarize(v).p50;
  };
  if (!restore_timings.empty()) {
    const auto& r = restore_timings;
    std::printf(
        "| clone phases, p50 | files %.0f, restore %.0f, agent up %.0f, seed + host key %.0f, "
        "clock %.0f, identity %.0f, SSH %.0f ms; %d agent commands |\n",
        phase(r, &clone_timing::prepare_ms), phase(r, &clone_timing::restore_ms),
        phase(r, &clone_timing::agent_ms), phase(r, &clone_timing::host_key_ms),
        phase(r, &clone_timing::clock_ms), phase(r, &clone_timing::files_ms),
        phase(r, &clone_timing::ssh_ms), r.front().agent_commands);
  }
  if (!timings.empty()) {
    std::printf(
        "| apply_login phases, p50 | lookup %.0f, login files %.0f, SSH %.0f ms; %d agent "
        "commands |\n",
        phase(timings, &clone_timing::prepare_ms), phase(timings, &clone_timing::files_ms),
        phase(timings, &clone_timing::ssh_ms), timings.front().agent_commands);
  }
  for (std::size_t i = 0; i < memory.size(); ++i) {
    std::printf(
        "| live clone %zu: QEMU PSS / RSS, overlay allocated | %.0f / %.0f MiB, %.1f MiB |\n",
        i + 1, memory[i].first, memory[i].second, disk[i]);
  }
  if (cold_boot) {
    std::printf("| cold boot create_vm → ready (same spec) | %.1f s, QEMU PSS %.0f MiB |\n", cold_s,
                cold_memory.first);
  }
  return failures == 0 ? 0 : 1;
}
