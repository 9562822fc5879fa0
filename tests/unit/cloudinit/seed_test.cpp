#include "cloud-init/seed.hpp"

#include "cloud-init/errc.hpp"
#include "cloud-init/yaml.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace litterbox::cloudinit {
namespace {

seed_spec sample() {
  seed_spec s;
  s.instance_id = "0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b";
  s.hostname = "sb-1c2d3e4f5a6b";
  s.username = "agent";
  s.authorized_keys = {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeUserKey user@example"};
  s.env = {{"SHELL_INJECTION", "'; touch /tmp/pwned #"},
           {"COMMAND_SUBST", "$(id)"},
           {"TEMPLATE", "{{ x }}"},
           {"CLOUD_CONFIG", "#cloud-config"},
           {"MIXED", "  \"q\" 'q' \\b $HOME grüße  "}};
  s.host_private_key =
      "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
      "-----END OPENSSH PRIVATE KEY-----\n";
  s.host_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKey";
  s.ready_token = "0123456789abcdef0123456789abcdef";
  return s;
}

// The base64 payload of the write_files entry for `path` in `user_data`, decoded.
std::string written_file(const std::string& user_data, const std::string& path) {
  const auto at = user_data.find("  - path: " + yaml_quote(path) + "\n");
  if (at == std::string::npos) {
    return "<missing>";
  }
  const std::string marker = "    content: \"";
  const auto c = user_data.find(marker, at);
  const auto end = user_data.find('"', c + marker.size());
  std::string decoded;
  if (!base64_decode(user_data.substr(c + marker.size(), end - c - marker.size()), decoded)) {
    return "<bad base64>";
  }
  return decoded;
}

TEST(RenderSeed, StartsWithCloudConfigHeaderAndSetsRequiredKeys) {
  const auto files = render_seed(sample());
  ASSERT_TRUE(files) << files.error().message;
  const auto& y = files->user_data;
  EXPECT_EQ(y.rfind("#cloud-config\n", 0), 0U);
  for (const auto* line :
       {"hostname: \"sb-1c2d3e4f5a6b\"\n", "manage_etc_hosts: true\n", "locale: false\n",
        "ssh_deletekeys: false\n", "ssh_genkeytypes: []\n", "  - name: \"agent\"\n",
        "    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n",
        "      - \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeUserKey user@example\"\n",
        "  ed25519_public: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKey\"\n"}) {
    EXPECT_NE(y.find(line), std::string::npos) << line;
  }
}

TEST(RenderSeed, EncodesThePrivateHostKeyAsOneQuotedLine) {
  const auto files = render_seed(sample());
  ASSERT_TRUE(files);
  EXPECT_NE(files->user_data.find("  ed25519_private: \"-----BEGIN OPENSSH PRIVATE KEY-----\\n"
                                  "b3BlbnNzaC1rZXktdjEAAAAA\\n-----END OPENSSH PRIVATE "
                                  "KEY-----\\n\"\n"),
            std::string::npos);
}

TEST(RenderSeed, MetaDataCarriesInstanceIdAndHostname) {
  const auto files = render_seed(sample());
  ASSERT_TRUE(files);
  EXPECT_EQ(files->meta_data,
            "instance-id: \"0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b\"\n"
            "local-hostname: \"sb-1c2d3e4f5a6b\"\n");
}

TEST(RenderSeed, HostileEnvValuesNeverAppearInUserDataAndRoundTripThroughBase64) {
  const auto spec = sample();
  const auto files = render_seed(spec);
  ASSERT_TRUE(files);
  // Searching from offset 1 skips the document's own "#cloud-config" header line.
  for (const auto& [k, v] : spec.env) {
    EXPECT_EQ(files->user_data.find(v, 1), std::string::npos) << k;
  }
  EXPECT_EQ(written_file(files->user_data, "/home/agent/.ssh/environment"),
            "CLOUD_CONFIG=#cloud-config\n"
            "COMMAND_SUBST=$(id)\n"
            "MIXED=  \"q\" 'q' \\b $HOME grüße  \n"
            "SHELL_INJECTION='; touch /tmp/pwned #\n"
            "TEMPLATE={{ x }}\n");
}

TEST(RenderSeed, EnvironmentFileIsDeferredAndOwnedByTheLoginUser) {
  const auto files = render_seed(sample());
  ASSERT_TRUE(files);
  const auto& y = files->user_data;
  const auto at = y.find("  - path: \"/home/agent/.ssh/environment\"\n");
  ASSERT_NE(at, std::string::npos);
  const auto entry = y.substr(at, y.find("  - path:", at + 1) - at);
  EXPECT_NE(entry.find("    owner: \"agent:agent\"\n"), std::string::npos);
  EXPECT_NE(entry.find("    permissions: \"0600\"\n"), std::string::npos);
  EXPECT_NE(entry.find("    defer: true\n"), std::string::npos);
}

TEST(RenderSeed, SshdServesOnlyThePinnedKeyAndAcceptsTheUserEnvironment) {
  const auto files = render_seed(sample());
  ASSERT_TRUE(files);
  const auto conf = written_file(files->user_data, "/etc/ssh/sshd_config.d/50-litterbox.conf");
  EXPECT_NE(conf.find("HostKey /etc/ssh/ssh_host_ed25519_key\n"), std::string::npos);
  EXPECT_NE(conf.find("PermitUserEnvironment yes\n"), std::string::npos);
  EXPECT_NE(conf.find("PasswordAuthentication no\n"), std::string::npos);
}

TEST(RenderSeed, ReadyTokenAppearsOnlyInsideTheEncodedReadyScript) {
  const auto spec = sample();
  const auto files = render_seed(spec);
  ASSERT_TRUE(files);
  EXPECT_EQ(files->user_data.find(spec.ready_token), std::string::npos);
  const auto script = written_file(files->user_data, "/usr/local/lib/litterbox/ready");
  EXPECT_NE(script.find("'" + spec.ready_token + "'"), std::string::npos);
  EXPECT_NE(script.find("> /dev/ttyS0"), std::string::npos);
  EXPECT_NE(files->user_data.find("--property=After=cloud-final.service"), std::string::npos);
}

TEST(RenderSeed, IsDeterministic) {
  const auto a = render_seed(sample());
  const auto b = render_seed(sample());
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_EQ(a->user_data, b->user_data);
  EXPECT_EQ(a->meta_data, b->meta_data);
}

TEST(RenderSeed, RejectsFieldsThatCannotBeRenderedSafely) {
  const auto rejects = [](auto mutate) {
    auto s = sample();
    mutate(s);
    const auto r = render_seed(s);
    return !r && r.error().code == make_error_code(errc::invalid_spec);
  };
  EXPECT_TRUE(rejects([](seed_spec& s) { s.username = "Root;rm"; }));
  EXPECT_TRUE(rejects([](seed_spec& s) { s.username = ""; }));
  EXPECT_TRUE(rejects([](seed_spec& s) { s.hostname = "bad host"; }));
  EXPECT_TRUE(rejects([](seed_spec& s) { s.instance_id = "../x"; }));
  EXPECT_TRUE(rejects([](seed_spec& s) { s.ready_token = "short"; }));
  EXPECT_TRUE(rejects([](seed_spec& s) { s.ready_token = "0123456789abcdef'; id #"; }));
  EXPECT_TRUE(rejects([](seed_spec& s) { s.env["1BAD"] = "x"; }));
  EXPECT_TRUE(rejects([](seed_spec& s) { s.env["A-B"] = "x"; }));
  EXPECT_TRUE(rejects([](seed_spec& s) { s.env["OK"] = "line\nbreak"; }));
  EXPECT_TRUE(rejects([](seed_spec& s) { s.authorized_keys.push_back("a\nb"); }));
  EXPECT_TRUE(rejects([](seed_spec& s) { s.host_private_key.clear(); }));
}

TEST(WriteSeedImage, WritesAPrivateCidataVolume) {
  const auto files = render_seed(sample());
  ASSERT_TRUE(files);
  const auto dir =
      std::filesystem::temp_directory_path() / ("lb-seed-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto out = dir / "seed.iso";
  const auto ok = write_seed_image(*files, out, std::chrono::seconds(60));
  ASSERT_TRUE(ok) << ok.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777U, 0600U);
  // ISO 9660 primary volume descriptor: sector 16, volume id at offset 40.
  std::ifstream in(out, std::ios::binary);
  in.seekg(16 * 2048 + 40);
  std::string volume(6, '\0');
  in.read(volume.data(), 6);
  EXPECT_EQ(volume, "cidata");
  // Nothing but the image is left next to it.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) {
    ++entries;
  }
  EXPECT_EQ(entries, 1);
  std::filesystem::remove_all(dir);
}

TEST(ConsoleRedaction, ReadyAndFailedTokensNeverLeaveTheControlPlane) {
  const std::string console =
      "boot ok\nlitterbox-ready 7bd0aefbceb1cc5ec18c85899c6dc0bf done\n"
      "litterbox-failed 0123abcd 1\nlitterbox-ready ";
  const auto out = redact_ready_tokens(console);
  EXPECT_EQ(out,
            "boot ok\nlitterbox-ready <token> done\nlitterbox-failed <token> 1\n"
            "litterbox-ready <token>");
  EXPECT_EQ(out.find("7bd0aefb"), std::string::npos);
  EXPECT_EQ(redact_ready_tokens("no markers here"), "no markers here");
}

}  // namespace
}  // namespace litterbox::cloudinit
