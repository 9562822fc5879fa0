#include "client/cli/key_store.hpp"

#include "client/errc.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace litterbox::client::cli {
namespace {

class KeyStore : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "lb-keys-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::filesystem::path root_;
};

const std::string k_id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";

TEST_F(KeyStore, SavesKeysOwnerOnlyAndRemovesThem) {
  const key_store store(root_ / "data" / "litterbox" / "keys");
  const auto path = store.save(k_id, "-----BEGIN KEY-----\nabc\n-----END KEY-----");
  ASSERT_TRUE(path) << path.error().message;
  EXPECT_EQ(*path, root_ / "data" / "litterbox" / "keys" / k_id);
  struct stat st {};
  ASSERT_EQ(::stat(path->c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777U, 0600U);
  ASSERT_EQ(::stat((root_ / "data" / "litterbox" / "keys").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777U, 0700U);
  std::ifstream in(*path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "-----BEGIN KEY-----\nabc\n-----END KEY-----\n");
  EXPECT_EQ(store.find(k_id), *path);
  store.remove(k_id);
  EXPECT_FALSE(store.find(k_id));
  store.remove(k_id);  // removing twice is fine
}

TEST_F(KeyStore, RefusesIdsThatAreNotUuids) {
  const key_store store(root_);
  const auto path = store.save("../../etc/passwd", "x");
  ASSERT_FALSE(path);
  EXPECT_EQ(path.error().code, errc::invalid_argument);
  EXPECT_FALSE(store.find("../x"));
}

TEST(KeyStoreLocation, FollowsXdgDataHomeThenHome) {
  auto env = [](std::map<std::string, std::string> vars) -> env_lookup {
    return [vars](const std::string& n) -> std::optional<std::string> {
      const auto it = vars.find(n);
      return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
  };
  auto s = key_store::for_user(env({{"XDG_DATA_HOME", "/x"}, {"HOME", "/h"}}));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->dir(), std::filesystem::path("/x/litterbox/keys"));
  s = key_store::for_user(env({{"HOME", "/h"}}));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->dir(), std::filesystem::path("/h/.local/share/litterbox/keys"));
  EXPECT_FALSE(key_store::for_user(env({})));
}

}  // namespace
}  // namespace litterbox::client::cli
