#include "hypervisor/image/rootfs.hpp"

#include "hypervisor/errc.hpp"
#include "tests/unit/image/layer_builder.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <sys/stat.h>

namespace litterbox::hypervisor::image {
namespace {

namespace fs = std::filesystem;
using namespace testing;

class LayerApplier : public ::testing::Test {
 protected:
  // Applies each layer in order onto a fresh root and returns the overall outcome.
  result<void> apply(const std::vector<std::vector<tar_entry>>& layers) {
    auto applier = layer_applier::open(root_, limits_);
    if (!applier) {
      return applier.error();
    }
    int n = 0;
    for (const auto& layer : layers) {
      const fs::path blob = tmp_.path() / ("layer" + std::to_string(n++) + ".tar.gz");
      const auto digest = write_layer(blob, layer);
      if (auto r = applier->apply(blob, digest); !r) {
        return r.error();
      }
    }
    return applier->finish();
  }

  std::string read(const std::string& rel) {
    std::ifstream in(root_ / rel);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  unpack_limits limits_;
  temp_dir tmp_;
  fs::path root_ = [this] {
    fs::create_directory(tmp_.path() / "root");
    return tmp_.path() / "root";
  }();
};

TEST_F(LayerApplier, WhiteoutRemovesAFileOfALowerLayer) {
  ASSERT_TRUE(apply(
      {{dir("etc"), file("etc/keep", "k"), file("etc/gone", "g")}, {file("etc/.wh.gone", "")}}));
  EXPECT_TRUE(fs::exists(root_ / "etc/keep"));
  EXPECT_FALSE(fs::exists(fs::symlink_status(root_ / "etc/gone")));
  EXPECT_FALSE(fs::exists(root_ / "etc/.wh.gone"));
}

TEST_F(LayerApplier, WhiteoutRemovesAWholeDirectoryOfALowerLayer) {
  ASSERT_TRUE(
      apply({{dir("opt"), dir("opt/app"), file("opt/app/bin", "x")}, {file("opt/.wh.app", "")}}));
  EXPECT_TRUE(fs::is_directory(root_ / "opt"));
  EXPECT_FALSE(fs::exists(root_ / "opt/app"));
}

TEST_F(LayerApplier, OpaqueDirectoryHidesLowerContentButKeepsItsOwnLayer) {
  ASSERT_TRUE(apply({{dir("var"), file("var/old1"), dir("var/olddir"), file("var/olddir/x")},
                     // The marker comes after this layer's own entry: order must not matter.
                     {dir("var"), file("var/new", "n"), file("var/.wh..wh..opq", "")}}));
  EXPECT_EQ(read("var/new"), "n");
  EXPECT_FALSE(fs::exists(root_ / "var/old1"));
  EXPECT_FALSE(fs::exists(root_ / "var/olddir"));
  EXPECT_FALSE(fs::exists(root_ / "var/.wh..wh..opq"));
}

TEST_F(LayerApplier, HardLinksShareOneInodeWithinAndAcrossLayers) {
  ASSERT_TRUE(
      apply({{dir("bin"), file("bin/busybox", "bb", 0755), hardlink("bin/sh", "bin/busybox")},
             {hardlink("bin/ls", "bin/busybox")}}));
  struct stat a {};
  struct stat b {};
  struct stat c {};
  ASSERT_EQ(::stat((root_ / "bin/busybox").c_str(), &a), 0);
  ASSERT_EQ(::stat((root_ / "bin/sh").c_str(), &b), 0);
  ASSERT_EQ(::stat((root_ / "bin/ls").c_str(), &c), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_ino, c.st_ino);
  EXPECT_EQ(a.st_nlink, 3U);
}

TEST_F(LayerApplier, SymlinksAreKeptVerbatimAndResolvedInsideTheRoot) {
  ASSERT_TRUE(apply({{dir("etc"), symlink("escape", "/"), symlink("rel", "etc")},
                     // Written through an absolute symlink: must land in the root's /etc.
                     {file("escape/etc/planted", "inside")}}));
  EXPECT_EQ(fs::read_symlink(root_ / "escape"), fs::path("/"));
  EXPECT_EQ(fs::read_symlink(root_ / "rel"), fs::path("etc"));
  EXPECT_EQ(read("etc/planted"), "inside");
  EXPECT_FALSE(fs::exists("/etc/planted"));
}

TEST_F(LayerApplier, FileReplacedByDirectoryAcrossLayersAndBack) {
  ASSERT_TRUE(
      apply({{file("thing", "was a file"), dir("other"), file("other/x")},
             {dir("thing"), file("thing/inner", "now a dir"), file("other", "now a file")}}));
  EXPECT_TRUE(fs::is_directory(root_ / "thing"));
  EXPECT_EQ(read("thing/inner"), "now a dir");
  EXPECT_TRUE(fs::is_regular_file(root_ / "other"));
  EXPECT_EQ(read("other"), "now a file");
}

TEST_F(LayerApplier, ModesAndOwnersAreKept) {
  auto suid = file("usr-bin-sudo", "s", 04755);
  suid.uid = 0;
  auto owned = file("home-file", "h", 0600);
  owned.uid = 1234;
  owned.gid = 4321;
  auto owned_dir = dir("home", 0700);
  owned_dir.uid = 1234;
  ASSERT_TRUE(apply({{suid, owned, owned_dir}}));
  struct stat st {};
  ASSERT_EQ(::stat((root_ / "usr-bin-sudo").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04755U);
  ASSERT_EQ(::stat((root_ / "home-file").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600U);
  EXPECT_EQ(st.st_uid, 1234U);
  EXPECT_EQ(st.st_gid, 4321U);
  ASSERT_EQ(::stat((root_ / "home").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700U);
  EXPECT_EQ(st.st_uid, 1234U);
}

TEST_F(LayerApplier, MissingParentsAreCreated) {
  ASSERT_TRUE(apply({{file("a/b/c/deep", "d")}}));
  EXPECT_EQ(read("a/b/c/deep"), "d");
}

TEST_F(LayerApplier, BlobThatDoesNotMatchItsDigestIsImageCorrupt) {
  const fs::path blob = tmp_.path() / "l.tar.gz";
  write_layer(blob, {file("x")});
  auto applier = layer_applier::open(root_);
  ASSERT_TRUE(applier);
  auto r = applier->apply(blob, "sha256:" + std::string(64, '0'));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_corrupt);
  EXPECT_NE(r.error().message.find("digest"), std::string::npos);
}

TEST_F(LayerApplier, PathClimbingOutWithDotDotIsImageCorrupt) {
  auto r = apply({{file("../outside", "x")}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_corrupt);
}

TEST_F(LayerApplier, WhiteoutOfDotDotIsImageCorruptAndDeletesNothingOutsideTheRoot) {
  // `.wh...` names "..": removing it would empty the directory holding the root.
  { std::ofstream(tmp_.path() / "outside") << "keep me"; }
  auto r = apply({{dir("etc"), file("etc/keep", "k")}, {file(".wh...", "")}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_corrupt);
  EXPECT_NE(r.error().message.find("whiteout that names no entry"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp_.path() / "outside"));
  EXPECT_EQ(read("etc/keep"), "k");
}

TEST_F(LayerApplier, WhiteoutsOfNothingOrDotAreImageCorruptAndLeaveTheDirectory) {
  for (const char* marker : {"etc/.wh.", "etc/.wh..", ".wh.", ".wh.."}) {
    SCOPED_TRACE(marker);
    fs::remove_all(root_);
    fs::create_directory(root_);
    auto r = apply({{dir("etc"), file("etc/keep", "k")}, {file(marker, "")}});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::image_corrupt);
    EXPECT_EQ(read("etc/keep"), "k");
  }
}

TEST_F(LayerApplier, FileContentsOverTheByteLimitAreImageInvalidNamingTheLimit) {
  // 4 MiB of zeros gzip to a few KiB: the blob's size says nothing about what it unpacks to.
  limits_.max_bytes = std::uint64_t{3} << 20;
  auto r = apply({{file("one", std::string(std::size_t{2} << 20, '\0'))},
                  {file("two", std::string(std::size_t{2} << 20, '\0'))}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_invalid);
  EXPECT_NE(r.error().message.find("LITTERBOX_IMAGE_MAX_GB"), std::string::npos);
  EXPECT_NE(r.error().message.find("3 MiB"), std::string::npos);
  EXPECT_TRUE(fs::exists(root_ / "one"));
  EXPECT_FALSE(fs::exists(root_ / "two"));  // refused before a byte of it was written
}

TEST_F(LayerApplier, EntriesOverTheLimitAreImageInvalidNamingTheLimit) {
  limits_.max_entries = 5;
  std::vector<tar_entry> many;
  for (int i = 0; i < 10; ++i) {
    many.push_back(file("f" + std::to_string(i)));
  }
  auto r = apply({many});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_invalid);
  EXPECT_NE(r.error().message.find("LITTERBOX_IMAGE_MAX_ENTRIES"), std::string::npos);
  EXPECT_FALSE(fs::exists(root_ / "f5"));
}

TEST_F(LayerApplier, ParentDirectoriesALayerOmitsCountAsEntries) {
  limits_.max_entries = 3;
  auto r = apply({{file("a/b/c/d/e")}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_invalid);
}

TEST_F(LayerApplier, UnpackingStopsWhenTheDiskWouldKeepLessThanTheReserve) {
  limits_.min_free_bytes = std::numeric_limits<std::uint64_t>::max();
  auto r = apply({{file("big", std::string(std::size_t{65} << 20, '\0'))}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::insufficient_disk);
}

TEST_F(LayerApplier, GarbageBlobIsImageCorrupt) {
  const fs::path blob = tmp_.path() / "junk";
  { std::ofstream(blob) << "this is not a tar archive at all, just some text....."; }
  auto applier = layer_applier::open(root_);
  ASSERT_TRUE(applier);
  auto r = applier->apply(blob, "sha256:" + std::string(64, 'a'));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_corrupt);
}

TEST_F(LayerApplier, CompleteGuestPassesValidation) {
  ASSERT_TRUE(apply({minimal_guest()}));
  EXPECT_TRUE(validate_rootfs(root_));
}

TEST_F(LayerApplier, ValidationNamesEverythingMissing) {
  ASSERT_TRUE(apply({{dir("sbin"), file("sbin/init", "busybox init", 0755)}}));
  auto r = validate_rootfs(root_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::image_invalid);
  EXPECT_NE(r.error().message.find("systemd"), std::string::npos);
  EXPECT_NE(r.error().message.find("sshd"), std::string::npos);
  EXPECT_NE(r.error().message.find("cloud-init"), std::string::npos);
}

TEST_F(LayerApplier, KernelModulesAreAddedOnceAndExcludesSkipped) {
  ASSERT_TRUE(apply({minimal_guest()}));
  const fs::path mods = tmp_.path() / "modules" / "9.9.9-test";
  fs::create_directories(mods / "kernel/drivers/virtio");
  fs::create_directories(mods / "kernel/sound");
  std::ofstream(mods / "kernel/drivers/virtio/virtio_net.ko") << "ko";
  std::ofstream(mods / "kernel/sound/snd.ko") << "ko";
  std::ofstream(mods / "modules.dep") << "dep";
  auto added = add_kernel_modules(root_, mods, {"kernel/sound"});
  ASSERT_TRUE(added);
  EXPECT_EQ(added->first, "9.9.9-test");
  EXPECT_TRUE(added->second);
  // lib is a symlink to usr/lib in the guest: the modules land in usr/lib/modules.
  EXPECT_TRUE(fs::exists(root_ / "usr/lib/modules/9.9.9-test/kernel/drivers/virtio/virtio_net.ko"));
  EXPECT_TRUE(fs::exists(root_ / "usr/lib/modules/9.9.9-test/modules.dep"));
  EXPECT_FALSE(fs::exists(root_ / "usr/lib/modules/9.9.9-test/kernel/sound"));
  auto again = add_kernel_modules(root_, mods, {});
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->second);
}

TEST_F(LayerApplier, TheProxyHostsLineGoesIntoEtcHostsAndEveryCloudInitHostsTemplateOnce) {
  ASSERT_TRUE(apply({minimal_guest()}));
  fs::create_directories(root_ / "etc/cloud/templates");
  std::ofstream(root_ / "etc/hosts") << "127.0.0.1 localhost";  // no final newline
  std::ofstream(root_ / "etc/cloud/templates/hosts.debian.tmpl") << "## template:jinja\n";
  std::ofstream(root_ / "etc/cloud/templates/hosts.redhat.tmpl") << "";
  std::ofstream(root_ / "etc/cloud/templates/sources.list.debian.tmpl") << "deb x\n";
  const std::string line = "169.254.77.1 proxy.litterbox.internal";
  ASSERT_TRUE(add_hosts_line(root_, line));
  ASSERT_TRUE(add_hosts_line(root_, line));  // idempotent
  EXPECT_EQ(read("etc/hosts"), "127.0.0.1 localhost\n" + line + "\n");
  EXPECT_EQ(read("etc/cloud/templates/hosts.debian.tmpl"), "## template:jinja\n" + line + "\n");
  EXPECT_EQ(read("etc/cloud/templates/hosts.redhat.tmpl"), line + "\n");
  EXPECT_EQ(read("etc/cloud/templates/sources.list.debian.tmpl"), "deb x\n");
}

TEST_F(LayerApplier, AnImageWithoutEtcHostsGetsOneWithTheProxyLine) {
  ASSERT_TRUE(apply({minimal_guest()}));
  fs::remove(root_ / "etc/hosts");
  ASSERT_TRUE(add_hosts_line(root_, "169.254.77.1 proxy.litterbox.internal"));
  EXPECT_EQ(read("etc/hosts"), "169.254.77.1 proxy.litterbox.internal\n");
}

}  // namespace
}  // namespace litterbox::hypervisor::image
