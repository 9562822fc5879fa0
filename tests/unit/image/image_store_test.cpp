#include "hypervisor/image/image_store.hpp"

#include "base/process.hpp"
#include "base/secret.hpp"
#include "hypervisor/errc.hpp"
#include "tests/unit/image/layer_builder.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

namespace litterbox::hypervisor::image {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace testing;

// An in-memory registry: manifests by "repository:tag" and by digest, blobs in a directory.
class fake_registry final : public registry {
 public:
  explicit fake_registry(fs::path blobs) : blobs_(std::move(blobs)) {}

  // Publishes an image made of `layers` as repository:tag and returns its manifest digest.
  std::string publish(const std::string& repo_tag,
                      const std::vector<std::vector<tar_entry>>& layers) {
    json manifest = {{"schemaVersion", 2},
                     {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                     {"config",
                      {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                       {"digest", "sha256:" + std::string(64, 'c')},
                       {"size", 2}}},
                     {"layers", json::array()}};
    for (const auto& layer : layers) {
      const fs::path tmp = blobs_ / ("tmp" + std::to_string(counter_++));
      const std::string digest = write_layer(tmp, layer);
      fs::rename(tmp, blobs_ / digest.substr(7));
      manifest["layers"].push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                                    {"digest", digest},
                                    {"size", fs::file_size(blobs_ / digest.substr(7))}});
    }
    const std::string raw = manifest.dump();
    const std::string digest = "sha256:" + sha256_hex(raw);
    std::lock_guard lock(mutex_);
    manifests_[repo_tag] = raw;
    manifests_[digest] = raw;
    return digest;
  }

  void put_raw(const std::string& key, const std::string& raw) {
    std::lock_guard lock(mutex_);
    manifests_[key] = raw;
  }

  result<std::string> fetch_manifest(const image_ref& ref) override {
    std::lock_guard lock(mutex_);
    ++fetches;
    const auto key = ref.digest.empty() ? ref.repository + ":" + ref.tag : ref.digest;
    auto it = manifests_.find(key);
    if (it == manifests_.end()) {
      return make_error(errc::image_not_found, "no such image");
    }
    return it->second;
  }

  result<void> pull(const image_ref& /*ref*/, std::string_view digest,
                    const fs::path& dir) override {
    ++pulls;
    std::string raw;
    {
      std::lock_guard lock(mutex_);
      raw = manifests_.at(std::string(digest));
    }
    fs::create_directories(dir);
    std::ofstream(dir / "manifest.json", std::ios::binary) << raw;
    const auto doc = json::parse(raw);
    for (const auto& layer : doc["layers"]) {
      const std::string hex = layer["digest"].get<std::string>().substr(7);
      fs::copy_file(blobs_ / hex, dir / hex);
    }
    return {};
  }

  std::atomic<int> fetches{0};
  std::atomic<int> pulls{0};

 private:
  fs::path blobs_;
  int counter_ = 0;
  std::mutex mutex_;
  std::map<std::string, std::string> manifests_;
};

class ImageStore : public ::testing::Test {
 protected:
  ImageStore() { fs::create_directories(tmp_.path() / "blobs"); }

  image_store make_store(std::uint64_t reserve = 0) {
    store_config config;
    config.state_dir = tmp_.path() / "state";
    config.default_registry = "registry.test";
    config.reserve_bytes = reserve;
    return image_store(config, registry_);
  }

  temp_dir tmp_;
  std::shared_ptr<fake_registry> registry_ = std::make_shared<fake_registry>(tmp_.path() / "blobs");
};

TEST_F(ImageStore, EnsureBaseBuildsAReadOnlyQcow2OnceAndThenHitsTheCache) {
  const auto digest = registry_->publish("guest:1", {minimal_guest(), {file("etc/extra", "x")}});
  auto store = make_store();
  auto base = store.ensure_base("guest:1");
  ASSERT_TRUE(base) << base.error().message;
  EXPECT_EQ(base->digest, digest);
  EXPECT_EQ(base->path, tmp_.path() / "state/images" / digest / "base.qcow2");
  EXPECT_TRUE(fs::is_regular_file(base->path));
  EXPECT_EQ(fs::status(base->path).permissions() & fs::perms::all, fs::perms(0444));
  EXPECT_GT(base->virtual_bytes, 0U);

  auto again = store.ensure_base("guest:1");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->path, base->path);
  EXPECT_EQ(store.stats().pulls, 1U);
  EXPECT_EQ(store.stats().conversions, 1U);
  EXPECT_EQ(store.stats().cache_hits, 1U);
  EXPECT_EQ(registry_->pulls.load(), 1);

  // Pinned by digest and cached: the registry is not even asked.
  const int fetches = registry_->fetches.load();
  ASSERT_TRUE(store.ensure_base("registry.test/guest@" + digest));
  EXPECT_EQ(registry_->fetches.load(), fetches);
  // Nothing temporary is left behind.
  for (const auto& e : fs::directory_iterator(tmp_.path() / "state/images")) {
    EXPECT_EQ(e.path().filename().string().rfind(".tmp-", 0), std::string::npos) << e.path();
  }
}

TEST_F(ImageStore, ConcurrentEnsureBaseOfOneNewDigestConvertsOnce) {
  registry_->publish("guest:1", {minimal_guest()});
  auto store = make_store();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (store.ensure_base("guest:1")) {
        ++ok;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(store.stats().conversions, 1U);
  EXPECT_EQ(store.stats().pulls, 1U);
  EXPECT_EQ(store.stats().waits + store.stats().cache_hits, 7U);
}

TEST_F(ImageStore, ImageWithoutSystemdSshdOrCloudInitIsInvalidAndNotCached) {
  registry_->publish("busybox:1", {{dir("bin"), file("bin/sh", "sh", 0755)}});
  auto store = make_store();
  auto r = store.ensure_base("busybox:1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_invalid) << r.error().message;
  EXPECT_NE(r.error().message.find("systemd"), std::string::npos);
  EXPECT_NE(r.error().message.find("sshd"), std::string::npos);
  EXPECT_NE(r.error().message.find("cloud-init"), std::string::npos);
  EXPECT_EQ(store.stats().conversions, 0U);
}

TEST_F(ImageStore, UnknownImageIsImageNotFound) {
  auto store = make_store();
  auto r = store.ensure_base("nothing:here");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_not_found);
}

TEST_F(ImageStore, NotEnoughFreeDiskIsInsufficientDiskBeforeConverting) {
  registry_->publish("guest:1", {minimal_guest()});
  auto store = make_store(std::uint64_t{1} << 62);
  auto r = store.ensure_base("guest:1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::insufficient_disk);
  EXPECT_EQ(store.stats().conversions, 0U);
  EXPECT_FALSE(store.cached(store.resolve("guest:1").value()));
}

TEST_F(ImageStore, IndexResolvesToTheLinuxAmd64Manifest) {
  const auto amd64 = registry_->publish("guest:1", {minimal_guest()});
  const json index = {
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.index.v1+json"},
      {"manifests",
       {{{"digest", "sha256:" + std::string(64, 'b')},
         {"platform", {{"os", "linux"}, {"architecture", "arm64"}}}},
        {{"digest", amd64}, {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}}}}};
  registry_->put_raw("multi:1", index.dump());
  auto store = make_store();
  auto r = store.resolve("multi:1");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, amd64);
}

TEST_F(ImageStore, DigestPinnedReferenceServedOtherBytesIsImageCorrupt) {
  registry_->put_raw("sha256:" + std::string(64, 'd'), R"({"schemaVersion":2,"layers":[]})");
  auto store = make_store();
  auto r = store.resolve("guest@sha256:" + std::string(64, 'd'));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_corrupt);
}

TEST_F(ImageStore, StaleTempDirsOfDeadProcessesAreRemovedAtStart) {
  const fs::path images = tmp_.path() / "state/images";
  // pid 2^22+1 is above pid_max's default ceiling: that process cannot be alive.
  fs::create_directories(images / ".tmp-4194305-deadbeef/rootfs");
  auto store = make_store();
  EXPECT_FALSE(fs::exists(images / ".tmp-4194305-deadbeef"));
}

TEST_F(ImageStore, OverlayIsBackedByTheBaseAndGrownToDiskGb) {
  registry_->publish("guest:1", {minimal_guest()});
  auto store = make_store();
  auto base = store.ensure_base("guest:1");
  ASSERT_TRUE(base);
  const fs::path overlay = tmp_.path() / "host.qcow2";
  ASSERT_TRUE(store.create_overlay(*base, overlay, 5));
  auto info = run_process({"qemu-img", "info", "--output=json", overlay.string()},
                          std::chrono::seconds(30));
  ASSERT_TRUE(info);
  const auto doc = json::parse(info->out);
  EXPECT_EQ(doc["virtual-size"].get<std::uint64_t>(), std::uint64_t{5} << 30);
  EXPECT_EQ(doc["backing-filename"].get<std::string>(), base->path.string());
  // Copy-on-write: the overlay holds metadata only.
  EXPECT_LT(fs::file_size(overlay), std::uintmax_t{1} << 20);

  const fs::path small = tmp_.path() / "small.qcow2";
  ASSERT_TRUE(store.create_overlay(*base, small, std::nullopt));
  auto small_info =
      run_process({"qemu-img", "info", "--output=json", small.string()}, std::chrono::seconds(30));
  ASSERT_TRUE(small_info);
  EXPECT_EQ(json::parse(small_info->out)["virtual-size"].get<std::uint64_t>(), base->virtual_bytes);
}

TEST_F(ImageStore, GarbageCollectionRemovesUnusedBasesOldestFirstAboveTheBudget) {
  const auto d1 = registry_->publish("a:1", {minimal_guest(), {file("one")}});
  const auto d2 = registry_->publish("b:1", {minimal_guest(), {file("two")}});
  const auto d3 = registry_->publish("c:1", {minimal_guest(), {file("three")}});
  store_config config;
  config.state_dir = tmp_.path() / "state";
  config.default_registry = "registry.test";
  config.reserve_bytes = 0;
  config.size_budget_bytes = 1;  // everything unused must go
  config.gc_grace = std::chrono::seconds(0);
  image_store store(config, registry_);
  for (const char* ref : {"a:1", "b:1", "c:1"}) {
    ASSERT_TRUE(store.ensure_base(ref));
  }
  // Make the creation order unambiguous: d2 oldest, then d1, then d3.
  auto set_created = [&](const std::string& d, int t) {
    const fs::path meta = tmp_.path() / "state/images" / d / "meta.json";
    auto j = json::parse(std::ifstream(meta));
    j["created"] = t;
    fs::permissions(meta, fs::perms(0644));
    std::ofstream(meta) << j.dump();
  };
  set_created(d2, 100);
  set_created(d1, 200);
  set_created(d3, 300);
  auto report = store.collect_garbage({d1});
  ASSERT_TRUE(report);
  EXPECT_EQ(report->removed, (std::vector<std::string>{d2, d3}));
  EXPECT_TRUE(store.cached(d1));
  EXPECT_FALSE(store.cached(d2));
  EXPECT_FALSE(store.cached(d3));
  EXPECT_EQ(store.stats().collected, 2U);
}

TEST_F(ImageStore, ABaseHandedOutWithinTheGraceIsKeptEvenWhenNoRowNamesItYet) {
  // A create that has prepared its image but not yet recorded the digest must not lose the
  // base to a collection running in between.
  const auto d1 = registry_->publish("a:1", {minimal_guest(), {file("one")}});
  store_config config;
  config.state_dir = tmp_.path() / "state";
  config.default_registry = "registry.test";
  config.reserve_bytes = 0;
  config.size_budget_bytes = 1;
  image_store store(config, registry_);
  ASSERT_TRUE(store.ensure_base("a:1"));
  auto report = store.collect_garbage({});
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->removed.empty());
  EXPECT_TRUE(store.cached(d1));
}

}  // namespace
}  // namespace litterbox::hypervisor::image
