// Needs Debian's docker-registry, skopeo, mkfs.ext4, qemu-img and debugfs; starts its own
// loopback registries on free ports, so it never touches the shared one on 127.0.0.1:5000.
#include "base/process.hpp"
#include "hypervisor/errc.hpp"
#include "hypervisor/image/image_store.hpp"
#include "hypervisor/libvirt/domain_xml.hpp"
#include "tests/unit/image/cached_base.hpp"
#include "tests/unit/image/layer_builder.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace litterbox::hypervisor::image {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace testing;

int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(s);
  return ntohs(addr.sin_port);
}

// A docker-registry process of this test's own; ready once it logs that it listens.
class loopback_registry {
 public:
  explicit loopback_registry(const fs::path& dir) : dir_(dir), port_(free_port()) {
    fs::create_directories(dir_ / "data");
    std::ofstream(dir_ / "config.yml")
        << "version: 0.1\nlog:\n  level: info\n"
        << "storage:\n  filesystem:\n    rootdirectory: " << (dir_ / "data").string()
        << "\n  delete:\n    enabled: true\nhttp:\n  addr: " << address() << "\n";
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) {
      throw std::runtime_error("pipe");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    const std::string config = (dir_ / "config.yml").string();
    std::vector<char*> argv{const_cast<char*>("docker-registry"), const_cast<char*>("serve"),
                            const_cast<char*>(config.c_str()), nullptr};
    const int rc =
        ::posix_spawnp(&pid_, "docker-registry", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    if (rc != 0) {
      ::close(pipe_fds[0]);
      throw std::runtime_error(
          "docker-registry is not installed (apt-get install docker-registry)");
    }
    // Block on its log until it says it listens (or 30 s pass): no sleeping, no guessing.
    std::string log;
    char buf[4096];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (log.find("listening on") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      pollfd p{pipe_fds[0], POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) {
        continue;
      }
      const auto n = ::read(pipe_fds[0], buf, sizeof buf);
      if (n <= 0) {
        break;
      }
      log.append(buf, static_cast<std::size_t>(n));
    }
    log_fd_ = pipe_fds[0];
    if (log.find("listening on") == std::string::npos) {
      stop();
      throw std::runtime_error("docker-registry did not start: " + log);
    }
    // Keep draining its log so it never blocks on a full pipe.
    drain_ = std::thread([fd = log_fd_] {
      char sink[4096];
      while (::read(fd, sink, sizeof sink) > 0) {
      }
    });
  }
  loopback_registry(const loopback_registry&) = delete;
  loopback_registry& operator=(const loopback_registry&) = delete;
  ~loopback_registry() { stop(); }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (drain_.joinable()) {
      drain_.join();
    }
    if (log_fd_ >= 0) {
      ::close(log_fd_);
      log_fd_ = -1;
    }
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const fs::path& data() const { return dir_; }

 private:
  fs::path dir_;
  int port_;
  pid_t pid_ = -1;
  int log_fd_ = -1;
  std::thread drain_;
};

// Writes an OCI layout with `layers` and pushes it as `target` (docker://…).
void push_image(const fs::path& work, const std::string& target,
                const std::vector<std::vector<tar_entry>>& layers) {
  const fs::path layout = work / ("layout-" + std::to_string(::getpid()) + "-" +
                                  std::to_string(std::hash<std::string>{}(target)));
  fs::create_directories(layout / "blobs/sha256");
  auto put = [&](const std::string& bytes) {
    const auto hex = sha256_hex(bytes);
    std::ofstream(layout / "blobs/sha256" / hex, std::ios::binary) << bytes;
    return std::pair{"sha256:" + hex, bytes.size()};
  };
  json diff_ids = json::array();
  json layer_descs = json::array();
  for (const auto& layer : layers) {
    const fs::path blob = layout / "tmp.tar.gz";
    const auto digest = write_layer(blob, layer);
    const auto size = fs::file_size(blob);
    fs::rename(blob, layout / "blobs/sha256" / digest.substr(7));
    // diff_ids are over the uncompressed tar; the registry does not check them.
    diff_ids.push_back(digest);
    layer_descs.push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                           {"digest", digest},
                           {"size", size}});
  }
  const auto [config_digest, config_size] =
      put(json{{"architecture", "amd64"},
               {"os", "linux"},
               {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}}
              .dump());
  const auto [manifest_digest, manifest_size] = put(json{
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
      {"config",
       {{"mediaType", "application/vnd.oci.image.config.v1+json"},
        {"digest", config_digest},
        {"size", config_size}}},
      {"layers", layer_descs}}.dump());
  std::ofstream(layout / "oci-layout") << R"({"imageLayoutVersion":"1.0.0"})";
  std::ofstream(layout / "index.json")
      << json{{"schemaVersion", 2},
              {"manifests",
               {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                 {"digest", manifest_digest},
                 {"size", manifest_size},
                 {"annotations", {{"org.opencontainers.image.ref.name", "t"}}}}}}}
             .dump();
  auto run = run_process({"skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                          "oci:" + layout.string() + ":t", "docker://" + target},
                         std::chrono::seconds(120));
  if (!run || run->exit_code != 0) {
    throw std::runtime_error("cannot push " + target + ": " + (run ? run->err : "skopeo missing"));
  }
}

// The raw filesystem image inside the qcow2 `disk`, for debugfs; "" or what went wrong.
std::string to_raw(const fs::path& disk, const fs::path& raw) {
  auto run = run_process({"qemu-img", "convert", "-O", "raw", disk.string(), raw.string()},
                         std::chrono::seconds(120));
  if (!run) {
    return run.error().message;
  }
  return run->exit_code == 0 ? std::string() : "qemu-img convert failed: " + run->err;
}

std::string debugfs(const fs::path& raw, const std::string& request) {
  auto run = run_process({"debugfs", "-R", request, raw.string()}, std::chrono::seconds(60));
  return run ? run->out + run->err : std::string("debugfs failed");
}

class ImageStoreIntegration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new temp_dir();
    registry_ = new loopback_registry(tmp_->path() / "registry");
    modules_ = tmp_->path() / "modules" / "6.1.0-test-amd64";
    fs::create_directories(modules_ / "kernel/drivers/net");
    std::ofstream(modules_ / "kernel/drivers/net/virtio_net.ko") << "module";
    std::ofstream(modules_ / "modules.dep") << "kernel/drivers/net/virtio_net.ko:\n";
  }
  static void TearDownTestSuite() {
    delete registry_;
    delete tmp_;
  }

  image_store make_store(const std::string& name) {
    store_config config;
    config.state_dir = tmp_->path() / name;
    config.insecure_registries = {registry_->address()};
    config.kernel_modules_dir = modules_;
    config.reserve_bytes = 0;
    return image_store(config);
  }

  std::string ref(const std::string& repo_tag) { return registry_->address() + "/" + repo_tag; }

  static temp_dir* tmp_;
  static loopback_registry* registry_;
  static fs::path modules_;
};
temp_dir* ImageStoreIntegration::tmp_ = nullptr;
loopback_registry* ImageStoreIntegration::registry_ = nullptr;
fs::path ImageStoreIntegration::modules_;

TEST_F(ImageStoreIntegration, PullsFlattensAndConvertsAnImageWhoseFilesystemHonoursWhiteouts) {
  push_image(tmp_->path(), ref("test/guest:1"),
             {minimal_guest(),
              {file("etc/motd", "hello from layer two\n"), file("etc/.wh.hostname", "")}});
  auto store = make_store("state-a");
  auto digest = store.resolve(ref("test/guest:1"));
  ASSERT_TRUE(digest) << digest.error().message;
  auto base = store.ensure_base(ref("test/guest:1"));
  ASSERT_TRUE(base) << base.error().message;
  EXPECT_EQ(base->digest, *digest);
  EXPECT_EQ(base->modules_version, "6.1.0-test-amd64");

  const fs::path raw = tmp_->path() / "check.raw";
  ASSERT_EQ(to_raw(base->path, raw), "");
  EXPECT_NE(debugfs(raw, "cat /etc/motd").find("hello from layer two"), std::string::npos);
  EXPECT_NE(debugfs(raw, "stat /etc/hostname").find("File not found"), std::string::npos);
  EXPECT_NE(debugfs(raw, "cat /usr/lib/modules/6.1.0-test-amd64/kernel/drivers/net/virtio_net.ko")
                .find("module"),
            std::string::npos);
  // Owners survive mkfs: the root directory and files belong to root.
  EXPECT_NE(debugfs(raw, "stat /usr/bin/cloud-init").find("User:     0"), std::string::npos);
}

TEST_F(ImageStoreIntegration, SecondEnsureBaseOfTheSameDigestDoesNoPullAndNoConversion) {
  push_image(tmp_->path(), ref("test/guest:again"), {minimal_guest()});
  auto store = make_store("state-b");
  ASSERT_TRUE(store.ensure_base(ref("test/guest:again")));
  const auto before = store.stats();
  auto again = store.ensure_base(ref("test/guest:again"));
  ASSERT_TRUE(again);
  const auto after = store.stats();
  EXPECT_EQ(after.pulls, before.pulls);
  EXPECT_EQ(after.conversions, before.conversions);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
}

TEST_F(ImageStoreIntegration, EightConcurrentEnsureBaseOfOneNewImageConvertOnce) {
  push_image(tmp_->path(), ref("test/guest:eight"), {minimal_guest(), {file("etc/eight")}});
  auto store = make_store("state-c");
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (store.ensure_base(ref("test/guest:eight"))) {
        ++ok;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(store.stats().pulls, 1U);
  EXPECT_EQ(store.stats().conversions, 1U);
}

TEST_F(ImageStoreIntegration, UnknownTagIsImageNotFound) {
  auto store = make_store("state-d");
  auto r = store.ensure_base(ref("test/guest:no-such-tag"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_not_found) << r.error().message;
}

TEST_F(ImageStoreIntegration, CorruptBlobInTheRegistryIsImageCorrupt) {
  const std::vector<tar_entry> extra{file("etc/corrupt-me", std::string(4096, 'z'))};
  push_image(tmp_->path(), ref("test/guest:corrupt"), {minimal_guest(), extra});
  // Find the second layer's blob in the registry's storage and damage it in place.
  const fs::path probe = tmp_->path() / "probe.tar.gz";
  const auto layer_digest = write_layer(probe, extra);
  const auto hex = layer_digest.substr(7);
  const fs::path blob =
      registry_->data() / "data/docker/registry/v2/blobs/sha256" / hex.substr(0, 2) / hex / "data";
  ASSERT_TRUE(fs::exists(blob)) << blob;
  {
    std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f << "corruption";
  }
  auto store = make_store("state-e");
  auto r = store.ensure_base(ref("test/guest:corrupt"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_corrupt) << r.error().message;
  EXPECT_FALSE(store.cached(store.resolve(ref("test/guest:corrupt")).value()));
}

TEST_F(ImageStoreIntegration, StoppedRegistryIsRegistryUnavailable) {
  loopback_registry doomed(tmp_->path() / "doomed-registry");
  const std::string target = doomed.address() + "/test/guest:1";
  doomed.stop();
  store_config config;
  config.state_dir = tmp_->path() / "state-f";
  config.insecure_registries = {doomed.address()};
  image_store store(config);
  auto r = store.ensure_base(target);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::registry_unavailable) << r.error().message;
}

TEST_F(ImageStoreIntegration, CachedBaseOfAnOlderConversionIsConvertedAgainWithTheProxyHostsLine) {
  std::vector<tar_entry> guest = minimal_guest();
  guest.push_back(file("etc/hosts", "127.0.0.1 localhost\n"));
  guest.push_back(dir("etc/cloud"));
  guest.push_back(dir("etc/cloud/templates"));
  guest.push_back(file("etc/cloud/templates/hosts.debian.tmpl", "127.0.0.1 localhost\n"));
  push_image(tmp_->path(), ref("test/guest:older"), {guest});
  auto store = make_store("state-g");
  auto digest = store.resolve(ref("test/guest:older"));
  ASSERT_TRUE(digest) << digest.error().message;
  // What a litterbox from before the hosts line left in the cache for this digest.
  const fs::path old = write_cached_base(tmp_->path() / "state-g/images", *digest, 1, 64 << 20);
  const std::string old_bytes = file_bytes(old);

  auto base = store.ensure_base(ref("test/guest:older"));
  ASSERT_TRUE(base) << base.error().message;
  EXPECT_EQ(store.stats().conversions, 1U);
  EXPECT_NE(base->path, old);
  EXPECT_EQ(file_bytes(old), old_bytes);

  const fs::path raw = tmp_->path() / "older.raw";
  ASSERT_EQ(to_raw(base->path, raw), "");
  const std::string line(k_proxy_hosts_line);
  EXPECT_NE(debugfs(raw, "cat /etc/hosts").find(line), std::string::npos);
  EXPECT_NE(debugfs(raw, "cat /etc/cloud/templates/hosts.debian.tmpl").find(line),
            std::string::npos);
}

}  // namespace
}  // namespace litterbox::hypervisor::image
