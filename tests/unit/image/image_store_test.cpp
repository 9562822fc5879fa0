#include "hypervisor/image/image_store.hpp"

#include "base/process.hpp"
#include "base/secret.hpp"
#include "hypervisor/errc.hpp"
#include "tests/unit/image/cached_base.hpp"
#include "tests/unit/image/layer_builder.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <sys/stat.h>
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
    if (down) {
      return make_error(errc::registry_unavailable, "registry.test: connection refused");
    }
    const auto key = ref.digest.empty() ? ref.repository + ":" + ref.tag : ref.digest;
    auto it = manifests_.find(key);
    if (it == manifests_.end()) {
      return make_error(errc::image_not_found, "no such image");
    }
    return it->second;
  }

  // The digest of what the tag names now, as a registry's HEAD says, when answer_heads.
  std::optional<std::string> head_digest(const image_ref& ref) override {
    ++heads;
    if (!answer_heads || !ref.digest.empty()) {
      return std::nullopt;
    }
    std::lock_guard lock(mutex_);
    auto it = manifests_.find(ref.repository + ":" + ref.tag);
    if (it == manifests_.end()) {
      return std::nullopt;
    }
    return "sha256:" + sha256_hex(it->second);
  }

  result<void> pull(const image_ref& /*ref*/, std::string_view digest,
                    const fs::path& dir) override {
    ++pulls;
    if (down) {
      return make_error(errc::registry_unavailable, "registry.test: connection refused");
    }
    if (on_pull) {
      on_pull(dir);
    }
    std::string raw;
    {
      std::lock_guard lock(mutex_);
      raw = manifests_.at(std::string(digest));
    }
    fs::create_directories(dir);
    std::ofstream(dir / "manifest.json", std::ios::binary) << raw;
    const auto doc = json::parse(raw);
    for (const auto& layer : doc.value("layers", json::array())) {
      if (layer.is_object() && layer.value("digest", json()).is_string()) {
        const std::string hex = layer["digest"].get<std::string>().substr(7);
        fs::copy_file(blobs_ / hex, dir / hex);
      }
    }
    return {};
  }

  /// Called with the directory each pull fills, before it is filled.
  std::function<void(const fs::path&)> on_pull;
  std::atomic<int> fetches{0};
  std::atomic<int> pulls{0};
  std::atomic<int> heads{0};
  std::atomic<bool> answer_heads{false};
  /// Every manifest fetch and pull fails as registry_unavailable.
  std::atomic<bool> down{false};

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
  EXPECT_EQ(base->path, tmp_.path() / "state/images" /
                            (digest + ".c" + std::to_string(k_base_conversion)) / "base.qcow2");
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

TEST_F(ImageStore, TagWhoseManifestDigestIsUnchangedResolvesWithoutAnotherFetch) {
  registry_->answer_heads = true;
  const auto digest = registry_->publish("guest:1", {minimal_guest()});
  auto store = make_store();
  for (int i = 0; i < 3; ++i) {
    auto r = store.resolve("guest:1");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*r, digest);
  }
  EXPECT_EQ(registry_->heads.load(), 3);    // the registry is asked every time
  EXPECT_EQ(registry_->fetches.load(), 1);  // but the manifest is fetched once
  EXPECT_EQ(store.stats().head_hits, 2U);
  EXPECT_EQ(store.stats().resolves, 3U);
}

TEST_F(ImageStore, TagPushedAnewResolvesToTheNewDigestNeverTheRememberedOne) {
  registry_->answer_heads = true;
  const auto first = registry_->publish("guest:1", {minimal_guest()});
  auto store = make_store();
  ASSERT_EQ(store.resolve("guest:1").value(), first);
  const auto second = registry_->publish("guest:1", {minimal_guest(), {file("etc/new", "2")}});
  ASSERT_NE(first, second);
  auto r = store.resolve("guest:1");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, second);
  EXPECT_EQ(registry_->fetches.load(), 2);
  EXPECT_EQ(store.stats().head_hits, 0U);
  // And the new digest is what the next unchanged look-up answers.
  EXPECT_EQ(store.resolve("guest:1").value(), second);
  EXPECT_EQ(registry_->fetches.load(), 2);
}

TEST_F(ImageStore, IndexTagWhoseDigestIsUnchangedAnswersTheRememberedAmd64Manifest) {
  registry_->answer_heads = true;
  const auto amd64 = registry_->publish("guest:1", {minimal_guest()});
  const json index = {
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.index.v1+json"},
      {"manifests",
       {{{"digest", amd64}, {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}}}}};
  registry_->put_raw("multi:1", index.dump());
  auto store = make_store();
  ASSERT_EQ(store.resolve("multi:1").value(), amd64);
  const int fetches = registry_->fetches.load();
  EXPECT_EQ(store.resolve("multi:1").value(), amd64);
  EXPECT_EQ(registry_->fetches.load(), fetches);
}

TEST_F(ImageStore, RegistryWithoutADigestLookUpIsFetchedOnEveryResolve) {
  const auto digest = registry_->publish("guest:1", {minimal_guest()});
  auto store = make_store();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(store.resolve("guest:1").value(), digest);
  }
  EXPECT_EQ(registry_->fetches.load(), 3);
  EXPECT_EQ(store.stats().head_hits, 0U);
}

TEST_F(ImageStore, RefusedManifestIsFetchedAndRefusedAgainNotRemembered) {
  registry_->answer_heads = true;
  registry_->put_raw("bad:1", R"({"schemaVersion":1})");
  auto store = make_store();
  for (int i = 0; i < 2; ++i) {
    auto r = store.resolve("bad:1");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::image_corrupt);
  }
  EXPECT_EQ(registry_->fetches.load(), 2);
  EXPECT_EQ(store.stats().head_hits, 0U);
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
    const fs::path meta = store.cached(d)->path.parent_path() / "meta.json";
    auto j = json::parse(std::ifstream(meta));
    j["created"] = t;
    fs::permissions(meta, fs::perms(0644));
    std::ofstream(meta) << j.dump();
  };
  // Least recently used goes first; "used" is stamped each time a base is handed out.
  auto set_used = [&](const std::string& d, int t) {
    set_created(d, t);
    const std::array<timespec, 2> times{timespec{t, 0}, timespec{t, 0}};
    const fs::path used = store.cached(d)->path.parent_path() / "used";
    ASSERT_EQ(::utimensat(AT_FDCWD, used.c_str(), times.data(), 0), 0);
  };
  set_used(d2, 100);
  set_used(d1, 200);
  set_used(d3, 300);
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

TEST_F(ImageStore, ImageIsUnpackedInADirectoryOnlyItsOwnerCanReachAndPublishedReadable) {
  // The unpacked tree holds the image's setuid files and device nodes with their modes: no
  // other user (nor a QEMU process) may reach it. The finished base must stay readable.
  registry_->publish("guest:1", {minimal_guest(), {file("usr/bin/su", "su", 04755)}});
  std::optional<fs::perms> work_perms;
  registry_->on_pull = [&](const fs::path& dir) {
    work_perms = fs::status(dir.parent_path()).permissions() & fs::perms::all;
  };
  auto store = make_store();
  auto base = store.ensure_base("guest:1");
  ASSERT_TRUE(base) << base.error().message;
  ASSERT_TRUE(work_perms);
  EXPECT_EQ(*work_perms, fs::perms(0700));
  EXPECT_EQ(fs::status(tmp_.path() / "state/images").permissions() & fs::perms::all,
            fs::perms(0755));
  EXPECT_EQ(fs::status(base->path.parent_path()).permissions() & fs::perms::all, fs::perms(0755));
  EXPECT_EQ(fs::status(base->path).permissions() & fs::perms::all, fs::perms(0444));
}

TEST_F(ImageStore, IndexWithoutManifestsIsImageInvalid) {
  registry_->put_raw("multi:1", R"({"schemaVersion":2,
      "mediaType":"application/vnd.oci.image.index.v1+json"})");
  auto store = make_store();
  auto r = store.resolve("multi:1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_invalid);
}

TEST_F(ImageStore, ManifestFieldsOfTheWrongTypeAreRefusedAsErrorsNotExceptions) {
  auto store = make_store();
  registry_->put_raw("index:1", R"({"schemaVersion":2,"manifests":[5,"x",{"platform":"linux"},
      {"platform":{"os":1,"architecture":"amd64"},"digest":"sha256:00"},
      {"platform":{"os":"linux","architecture":"amd64"},"digest":7}]})");
  auto index = store.resolve("index:1");
  ASSERT_FALSE(index);
  EXPECT_EQ(index.error().code, errc::image_invalid);

  registry_->put_raw("version:1", R"({"schemaVersion":"2","layers":[]})");
  auto version = store.resolve("version:1");
  ASSERT_FALSE(version);
  EXPECT_EQ(version.error().code, errc::image_corrupt);

  registry_->put_raw("media:1", R"({"schemaVersion":2,"mediaType":5,"manifests":7})");
  auto media = store.resolve("media:1");
  ASSERT_FALSE(media);
  EXPECT_EQ(media.error().code, errc::image_invalid);

  const std::string bad_layers = R"({"schemaVersion":2,"layers":[5,{"digest":1}]})";
  const std::string digest = "sha256:" + sha256_hex(bad_layers);
  registry_->put_raw("layers:1", bad_layers);
  registry_->put_raw(digest, bad_layers);
  auto layers = store.ensure_base("layers:1");
  ASSERT_FALSE(layers);
  EXPECT_EQ(layers.error().code, errc::image_corrupt);
}

TEST_F(ImageStore, WaiterOnAnotherCallsBuildGivesUpAtItsDeadline) {
  registry_->publish("guest:1", {minimal_guest()});
  std::promise<void> pulling;
  std::promise<void> release;
  auto released = release.get_future().share();
  registry_->on_pull = [&](const fs::path& /*dir*/) {
    pulling.set_value();
    released.wait();
  };
  auto store = make_store();
  auto builder = std::async(std::launch::async, [&] { return store.ensure_base("guest:1"); });
  pulling.get_future().wait();
  auto waiter = std::async(std::launch::async, [&] {
    return store.ensure_base("guest:1",
                             std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
  });
  const bool gave_up = waiter.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  release.set_value();
  ASSERT_TRUE(gave_up) << "the waiter did not honour its deadline";
  auto waited = waiter.get();
  ASSERT_FALSE(waited);
  EXPECT_EQ(waited.error().code, errc::registry_unavailable);
  EXPECT_NE(waited.error().message.find("deadline"), std::string::npos);
  // The build itself goes on and serves the next caller.
  auto built = builder.get();
  ASSERT_TRUE(built) << built.error().message;
  EXPECT_EQ(store.stats().waits, 1U);
}

TEST_F(ImageStore, AnotherProcessCollectingTheCacheSparesABaseHandedOutWithinTheGrace) {
  // litterboxd serve hands out a base; a cron `litterboxd reap` (another image_store on the
  // same state dir, with no memory of that) must not collect it before a row names it.
  const auto digest = registry_->publish("a:1", {minimal_guest()});
  store_config config;
  config.state_dir = tmp_.path() / "state";
  config.default_registry = "registry.test";
  config.reserve_bytes = 0;
  config.size_budget_bytes = 1;
  image_store serve(config, registry_);
  ASSERT_TRUE(serve.ensure_base("a:1"));
  // Built long ago: only the hand-out just now keeps it.
  const fs::path dir = serve.cached(digest)->path.parent_path();
  auto meta = json::parse(std::ifstream(dir / "meta.json"));
  meta["created"] = 100;
  fs::permissions(dir / "meta.json", fs::perms(0644));
  std::ofstream(dir / "meta.json") << meta.dump();

  image_store reap(config, registry_);
  auto kept = reap.collect_garbage({});
  ASSERT_TRUE(kept);
  EXPECT_TRUE(kept->removed.empty());
  EXPECT_TRUE(reap.cached(digest));

  // Once the grace has passed since the last hand-out, it goes.
  const std::array<timespec, 2> old{timespec{100, 0}, timespec{100, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (dir / "used").c_str(), old.data(), 0), 0);
  auto gone = reap.collect_garbage({});
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->removed, std::vector<std::string>{digest});
  EXPECT_FALSE(serve.cached(digest));
  // The next hand-out in the serving process builds it again rather than failing.
  auto again = serve.ensure_base("a:1");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_TRUE(fs::is_regular_file(again->path));
}

TEST_F(ImageStore, OverlaySmallerThanTheBaseIsRefusedAsImageInvalid) {
  registry_->publish("guest:1", {minimal_guest()});
  auto store = make_store();
  auto base = store.ensure_base("guest:1");
  ASSERT_TRUE(base);
  base->virtual_bytes = std::uint64_t{3} << 30;  // as a 3 GiB root filesystem would be
  const fs::path overlay = tmp_.path() / "state/vms/h/disk.qcow2";
  fs::create_directories(overlay.parent_path());
  auto r = store.create_overlay(*base, overlay, 2);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_invalid);
  EXPECT_NE(r.error().message.find("at least 3 GiB"), std::string::npos) << r.error().message;
  EXPECT_FALSE(fs::exists(overlay));
}

TEST_F(ImageStore, OverlaysTogetherCannotPromiseMoreThanTheCap) {
  registry_->publish("guest:1", {minimal_guest()});
  store_config config;
  config.state_dir = tmp_.path() / "state";
  config.default_registry = "registry.test";
  config.reserve_bytes = 0;
  config.overlay_max_bytes = std::uint64_t{3} << 30;
  image_store store(config, registry_);
  auto base = store.ensure_base("guest:1");
  ASSERT_TRUE(base);
  const fs::path vms = tmp_.path() / "state/vms";
  fs::create_directories(vms / "a");
  fs::create_directories(vms / "b");
  ASSERT_TRUE(store.create_overlay(*base, vms / "a/disk.qcow2", 2));
  auto over = store.create_overlay(*base, vms / "b/disk.qcow2", 2);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, errc::insufficient_disk);
  EXPECT_NE(over.error().message.find("LITTERBOX_OVERLAY_MAX_GB"), std::string::npos);
  EXPECT_FALSE(fs::exists(vms / "b/disk.qcow2"));
  // Room again once the first host's disk is gone.
  fs::remove(vms / "a/disk.qcow2");
  EXPECT_TRUE(store.create_overlay(*base, vms / "b/disk.qcow2", 2));
}

TEST_F(ImageStore, ACloneOverlayCountsAgainstTheCapLikeAnyOtherDisk) {
  registry_->publish("guest:1", {minimal_guest()});
  store_config config;
  config.state_dir = tmp_.path() / "state";
  config.default_registry = "registry.test";
  config.reserve_bytes = 0;
  config.overlay_max_bytes = std::uint64_t{3} << 30;
  image_store store(config, registry_);
  auto base = store.ensure_base("guest:1");
  ASSERT_TRUE(base);
  // A template's frozen disk: a 2 GiB overlay outside the hosts' directory.
  const fs::path vms = tmp_.path() / "state/vms";
  const fs::path template_disk = tmp_.path() / "state/templates/t/disk.qcow2";
  fs::create_directories(template_disk.parent_path());
  ASSERT_TRUE(store.create_overlay(*base, template_disk, 2));
  fs::create_directories(vms / "a");
  fs::create_directories(vms / "b");
  ASSERT_TRUE(store.create_clone_overlay(template_disk, vms / "a/disk.qcow2"));
  auto over = store.create_clone_overlay(template_disk, vms / "b/disk.qcow2");
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, errc::insufficient_disk);
  EXPECT_NE(over.error().message.find("LITTERBOX_OVERLAY_MAX_GB"), std::string::npos);
  EXPECT_FALSE(fs::exists(vms / "b/disk.qcow2"));
  fs::remove(vms / "a/disk.qcow2");
  EXPECT_TRUE(store.create_clone_overlay(template_disk, vms / "b/disk.qcow2"));
  auto missing = store.create_clone_overlay(tmp_.path() / "nothing.qcow2", vms / "c.qcow2");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::vm_create_failed);
}

TEST_F(ImageStore, VirtualSizeIsKnownWithoutTheNetworkOnlyForACachedDigest) {
  const auto digest = registry_->publish("guest:1", {minimal_guest()});
  auto store = make_store();
  EXPECT_FALSE(store.known_virtual_bytes("registry.test/guest@" + digest));
  auto base = store.ensure_base("guest:1");
  ASSERT_TRUE(base);
  const int fetches = registry_->fetches.load();
  EXPECT_EQ(store.known_virtual_bytes("registry.test/guest@" + digest), base->virtual_bytes);
  EXPECT_FALSE(store.known_virtual_bytes("guest:1"));  // a tag may have moved
  EXPECT_EQ(registry_->fetches.load(), fetches);
}

TEST_F(ImageStore, ImageUnpackingToMoreThanTheLimitIsImageInvalidAndNotCached) {
  const auto digest =
      registry_->publish("big:1", {minimal_guest(), {file("zeros", std::string(1 << 20, '\0'))}});
  store_config config;
  config.state_dir = tmp_.path() / "state";
  config.default_registry = "registry.test";
  config.reserve_bytes = 0;
  config.max_image_bytes = 512 * 1024;
  image_store store(config, registry_);
  auto r = store.ensure_base("big:1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_invalid);
  EXPECT_NE(r.error().message.find("LITTERBOX_IMAGE_MAX_GB"), std::string::npos);
  EXPECT_FALSE(store.cached(digest));
}

TEST_F(ImageStore, LayersThatWeighMoreThanTheLimitAreRefusedBeforeTheyAreDownloaded) {
  // Incompressible content: the layer weighs about as much compressed as unpacked.
  std::string noise(std::size_t{1} << 20, '\0');
  std::uint64_t x = 88172645463325252ULL;
  for (auto& c : noise) {
    x ^= x << 13U;
    x ^= x >> 7U;
    x ^= x << 17U;
    c = static_cast<char>(x & 0xffU);
  }
  registry_->publish("noise:1", {minimal_guest(), {file("noise", noise)}});
  store_config config;
  config.state_dir = tmp_.path() / "state";
  config.default_registry = "registry.test";
  config.reserve_bytes = 0;
  config.max_image_bytes = 512 * 1024;
  image_store store(config, registry_);
  auto r = store.ensure_base("noise:1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_invalid);
  EXPECT_NE(r.error().message.find("compressed"), std::string::npos) << r.error().message;
  EXPECT_EQ(registry_->pulls.load(), 0);
}

TEST_F(ImageStore, LayersThatCannotFitOnTheDiskAreRefusedBeforeTheyAreDownloaded) {
  registry_->publish("guest:1", {minimal_guest()});
  auto store = make_store(std::uint64_t{1} << 62);
  auto r = store.ensure_base("guest:1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::insufficient_disk);
  EXPECT_NE(r.error().message.find("pulling"), std::string::npos) << r.error().message;
  EXPECT_EQ(registry_->pulls.load(), 0);
}

// An upgrade whose conversion changed finds bases of the older one in the cache; guests' and
// templates' disks may still back onto them.
class ImageStoreConversion : public ImageStore {
 protected:
  image_store make_collecting_store(std::uint64_t budget) {
    store_config config;
    config.state_dir = tmp_.path() / "state";
    config.default_registry = "registry.test";
    config.reserve_bytes = 0;
    config.size_budget_bytes = budget;
    config.gc_grace = std::chrono::seconds(0);
    return image_store(config, registry_);
  }

  // The guest disk `disk` backed by `backing`, made as the driver makes hosts' and templates'.
  static void make_disk(const fs::path& backing, const fs::path& disk) {
    fs::create_directories(disk.parent_path());
    auto made = run_process({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                             backing.string(), disk.string()},
                            std::chrono::seconds(30));
    ASSERT_TRUE(made && made->exit_code == 0) << (made ? made->err : made.error().message);
  }

  fs::path images() const { return tmp_.path() / "state/images"; }
  fs::path vms() const { return tmp_.path() / "state/vms"; }

  std::string digest_ = registry_->publish("guest:1", {minimal_guest()});
  std::string pinned_ = "registry.test/guest@" + digest_;
  fs::path old_ = write_cached_base(images(), digest_, 1, std::uint64_t{64} << 20);
};

TEST_F(ImageStoreConversion, BaseWithoutAConversionInItsMetaIsNotHandedOutAndIsConvertedAgain) {
  auto store = make_store();
  EXPECT_FALSE(store.cached(digest_));
  EXPECT_FALSE(store.known_virtual_bytes(pinned_));
  // Even pinned by digest, which a cached base would answer without the registry.
  auto base = store.ensure_base(pinned_);
  ASSERT_TRUE(base) << base.error().message;
  EXPECT_EQ(store.stats().conversions, 1U);
  EXPECT_EQ(store.stats().cache_hits, 0U);
  EXPECT_EQ(base->path,
            images() / (digest_ + ".c" + std::to_string(k_base_conversion)) / "base.qcow2");
  EXPECT_NE(base->path, old_);
  const auto meta = json::parse(file_bytes(base->path.parent_path() / "meta.json"));
  EXPECT_EQ(meta["conversion"], k_base_conversion);
  EXPECT_EQ(store.cached(digest_)->path, base->path);
}

TEST_F(ImageStoreConversion,
       AnOlderBaseServesWhileThisConversionCannotBeMadeAndIsReplacedOnceItCan) {
  auto store = make_store();
  registry_->down = true;
  auto fallback = store.ensure_base(pinned_);
  ASSERT_TRUE(fallback) << fallback.error().message;
  EXPECT_EQ(fallback->path, old_);
  EXPECT_EQ(store.stats().conversions, 0U);
  EXPECT_TRUE(fs::exists(old_.parent_path() / "used")) << "handed out: spared by collection";
  EXPECT_FALSE(store.cached(digest_)) << "still not a base of this conversion";
  // A digest with no base at all still needs the registry.
  const auto other = registry_->publish("other:1", {minimal_guest(), {file("etc/o", "o")}});
  const auto none = store.ensure_base("registry.test/other@" + other);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, errc::registry_unavailable);

  // Any other failure is the create's (were it an image this conversion refuses, its old base
  // must not slip through): here, too little disk to convert.
  registry_->down = false;
  auto tight = make_store(std::uint64_t{1} << 60);
  const auto refused = tight.ensure_base(pinned_);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::insufficient_disk);

  auto converted = store.ensure_base(pinned_);
  ASSERT_TRUE(converted) << converted.error().message;
  EXPECT_EQ(store.stats().conversions, 1U);
  EXPECT_EQ(converted->path,
            images() / (digest_ + ".c" + std::to_string(k_base_conversion)) / "base.qcow2");
}

TEST_F(ImageStoreConversion, BaseWhoseMetaLacksTheConversionCountsAsOlderWhereverItLies) {
  {
    auto first = make_store();
    ASSERT_TRUE(first.ensure_base("guest:1"));
  }
  const fs::path meta =
      images() / (digest_ + ".c" + std::to_string(k_base_conversion)) / "meta.json";
  auto doc = json::parse(file_bytes(meta));
  doc.erase("conversion");
  fs::permissions(meta, fs::perms(0644));
  std::ofstream(meta) << doc.dump();
  auto store = make_collecting_store(std::uint64_t{1} << 40);
  EXPECT_FALSE(store.cached(digest_));
  // No disk backs onto it: it goes even though its digest is in use, and is then built again.
  auto report = store.collect_garbage({digest_});
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->superseded, (std::vector<std::string>{digest_, digest_}));
  auto base = store.ensure_base("guest:1");
  ASSERT_TRUE(base) << base.error().message;
  EXPECT_EQ(store.stats().conversions, 1U);
}

TEST_F(ImageStoreConversion, ReconversionLeavesTheOlderBaseByteForByteWhereItWas) {
  const std::string before = file_bytes(old_);
  const std::string meta_before = file_bytes(old_.parent_path() / "meta.json");
  ASSERT_FALSE(before.empty());
  // A host of the older conversion runs on it.
  make_disk(old_, vms() / "h" / "disk.qcow2");
  auto store = make_store();
  ASSERT_TRUE(store.ensure_base("guest:1"));
  EXPECT_EQ(file_bytes(old_), before);
  EXPECT_EQ(file_bytes(old_.parent_path() / "meta.json"), meta_before);
  EXPECT_EQ(fs::status(old_).permissions() & fs::perms::all, fs::perms(0444));
  EXPECT_FALSE(fs::exists(old_.parent_path() / "used")) << "the older base is never handed out";
}

TEST_F(ImageStoreConversion, BaseOfThisConversionIsReusedWithoutConvertingAgainAfterARestart) {
  {
    auto first = make_store();
    ASSERT_TRUE(first.ensure_base("guest:1"));
    ASSERT_EQ(first.stats().conversions, 1U);
  }
  auto restarted = make_store();
  auto again = restarted.ensure_base(pinned_);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(restarted.stats().conversions, 0U);
  EXPECT_EQ(restarted.stats().pulls, 0U);
  EXPECT_EQ(restarted.stats().cache_hits, 1U);
}

TEST_F(ImageStoreConversion, CollectingADigestNoRowNamesRemovesItsOlderAndItsCurrentBase) {
  auto store = make_collecting_store(1);
  ASSERT_TRUE(store.ensure_base("guest:1"));
  auto report = store.collect_garbage({});
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->removed, std::vector<std::string>{digest_});
  EXPECT_EQ(report->superseded, std::vector<std::string>{digest_});
  EXPECT_EQ(report->bytes_after, 0U);
  EXPECT_FALSE(fs::exists(old_.parent_path()));
  EXPECT_FALSE(store.cached(digest_));
  EXPECT_EQ(store.stats().collected, 2U);
}

TEST_F(ImageStoreConversion, OlderBaseOfADigestInUseStaysWhileAHostOrTemplateDiskBacksOntoIt) {
  auto store = make_collecting_store(std::uint64_t{1} << 40);  // far under budget
  const std::string before = file_bytes(old_);
  // From before the upgrade: a host on the older base, and a template with a clone of it.
  const fs::path host = vms() / "h" / "disk.qcow2";
  const fs::path template_disk = tmp_.path() / "state/templates/t/disk.qcow2";
  const fs::path clone = vms() / "c" / "disk.qcow2";
  make_disk(old_, host);
  make_disk(old_, template_disk);
  make_disk(template_disk, clone);
  ASSERT_TRUE(store.ensure_base("guest:1"));

  auto kept = store.collect_garbage({digest_});
  ASSERT_TRUE(kept) << kept.error().message;
  EXPECT_TRUE(kept->removed.empty());
  EXPECT_TRUE(kept->superseded.empty());
  EXPECT_EQ(file_bytes(old_), before);

  fs::remove(host);  // the host is gone; the template still backs onto the older base
  auto still = store.collect_garbage({digest_});
  ASSERT_TRUE(still);
  EXPECT_TRUE(still->superseded.empty());
  EXPECT_EQ(file_bytes(old_), before);

  fs::remove_all(vms() / "c");
  fs::remove_all(template_disk.parent_path());
  auto gone = store.collect_garbage({digest_});
  ASSERT_TRUE(gone);
  // Whatever the budget, and the digest's current base stays.
  EXPECT_EQ(gone->superseded, std::vector<std::string>{digest_});
  EXPECT_TRUE(gone->removed.empty());
  EXPECT_FALSE(fs::exists(old_.parent_path()));
  EXPECT_TRUE(store.cached(digest_));
}

TEST_F(ImageStoreConversion, OlderBaseStaysWhileADiskReachesItThroughAnotherDisk) {
  auto store = make_collecting_store(1);
  // A clone whose template's disk lies outside the directories collection lists.
  const fs::path middle = tmp_.path() / "elsewhere" / "disk.qcow2";
  make_disk(old_, middle);
  make_disk(middle, vms() / "c" / "disk.qcow2");
  ASSERT_TRUE(store.ensure_base("guest:1"));
  auto kept = store.collect_garbage({digest_});
  ASSERT_TRUE(kept);
  EXPECT_TRUE(kept->superseded.empty());
  EXPECT_TRUE(fs::exists(old_));
}

TEST_F(ImageStoreConversion, OlderBaseOfADigestInUseStaysWhenAGuestDiskCannotBeRead) {
  auto store = make_collecting_store(1);
  ASSERT_TRUE(store.ensure_base("guest:1"));
  // Not opened (symbolic links are not followed): what it backs onto is unknown.
  fs::create_directories(vms() / "h");
  fs::create_symlink(old_, vms() / "h" / "disk.qcow2");
  auto kept = store.collect_garbage({digest_});
  ASSERT_TRUE(kept);
  EXPECT_TRUE(kept->superseded.empty());
  EXPECT_TRUE(fs::exists(old_));
  // Its digest out of use, it goes as any base would.
  auto gone = store.collect_garbage({});
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->superseded, std::vector<std::string>{digest_});
}

}  // namespace
}  // namespace litterbox::hypervisor::image
