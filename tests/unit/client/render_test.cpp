#include "client/cli/render.hpp"

#include "base/time.hpp"
#include "client/errc.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace litterbox::client::cli {
namespace {

/// Compares `actual` with golden/<name>; LB_UPDATE_GOLDEN=1 rewrites the file instead.
void expect_golden(const std::string& name, const std::string& actual) {
  const std::string path = std::string(LB_CLIENT_GOLDEN_DIR) + "/" + name;
  if (const char* update = std::getenv("LB_UPDATE_GOLDEN"); update != nullptr && *update == '1') {
    std::ofstream(path, std::ios::binary) << actual;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << "missing golden file " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(actual, ss.str()) << "golden " << name << " differs; actual:\n" << actual;
}

timestamp at(const char* text) {
  return *parse_rfc3339(text);
}

schema::host active_host() {
  schema::host h;
  h.id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";
  h.name = "sb-7c8d9e0f1a2b";
  h.status = schema::host_status::active;
  h.provider = "libvirt";
  h.image = "127.0.0.1:5000/litterbox/debian:12";
  h.image_digest = "sha256:4f1c2d";
  h.cpus = 2;
  h.memory_mib = 2048;
  h.disk_gb = 20;
  h.ssh_host = "127.0.0.1";
  h.ssh_port = 22017;
  h.ssh_username = "agent";
  h.known_hosts = "[127.0.0.1]:22017 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey\n";
  h.private_key =
      "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n-----END OPENSSH PRIVATE KEY-----\n";
  h.created_at = at("2026-11-22T10:00:00.123456Z");
  h.updated_at = at("2026-11-22T10:01:40.5Z");
  h.activated_at = at("2026-11-22T10:01:40.5Z");
  h.expires_at = at("2026-11-23T10:01:40.5Z");
  return h;
}

schema::host failed_host() {
  schema::host h;
  h.id = "0190a1b2-c3d4-7e5f-8a6b-000000000002";
  h.name = "sb-000000000002";
  h.status = schema::host_status::error;
  h.provider = "libvirt";
  h.image = "registry/missing:1";
  h.instance_type = "small";
  h.cpus = 1;
  h.memory_mib = 1024;
  h.ssh_username = "agent";
  h.last_error = "ImageNotFound: registry/missing:1: manifest unknown";
  h.created_at = at("2026-11-22T09:00:00Z");
  h.updated_at = at("2026-11-22T09:00:03Z");
  return h;
}

TEST(RenderGolden, GetShowsAnActiveHostWithoutItsPrivateKey) {
  const auto text =
      render_host(active_host(), std::string("/home/u/.local/share/litterbox/keys/x"));
  expect_golden("get_active.txt", text);
  EXPECT_EQ(text.find("secret"), std::string::npos);
}

TEST(RenderGolden, GetShowsTheLastErrorOfAFailedHost) {
  expect_golden("get_error.txt", render_host(failed_host()));
}

TEST(RenderGolden, LsTableAlignsColumns) {
  auto never = active_host();
  never.id = "0190a1b2-c3d4-7e5f-8a6b-000000000003";
  never.name = "sb-000000000003";
  never.status = schema::host_status::bootstrapping;
  never.expires_at.reset();
  expect_golden("ls.txt", render_host_table({active_host(), failed_host(), never}));
}

TEST(RenderGolden, LsOfNothingIsJustTheHeader) {
  expect_golden("ls_empty.txt", render_host_table({}));
}

TEST(RenderGolden, ErrorsAreOneLineWithIssuesIndented) {
  std::string out = render_error(make_error(errc::not_found, "host not found"));
  out += render_error(make_error(errc::provisioning_failed, "BootFailed: kernel panic\nline two"));
  error e =
      make_error(errc::api_error, "HTTP 422: reserved env keys are not allowed: TAILSCALE_AUTHKEY");
  e.issues.push_back({{"body", "env"},
                      "Value error, reserved env keys are not allowed: TAILSCALE_AUTHKEY",
                      "value_error"});
  out += render_error(e);
  out += render_error(make_error(errc::auth, "service token rejected"));
  expect_golden("errors.txt", out);
}

TEST(RenderGolden, DoctorListsChecksAndHints) {
  doctor_report r;
  r.ok = false;
  r.active_provider = "libvirt";
  r.checks = {{"database", true, "", 1.25, ""},
              {"libvirt", false, "cannot connect to qemu:///system", 0.5, "start libvirtd -d"}};
  expect_golden("doctor.txt", render_doctor(r));
}

TEST(RenderJson, NeverPrintsThePrivateKey) {
  const auto text = render_host_json(active_host(), std::string("/k/x"));
  EXPECT_EQ(text.find("secret"), std::string::npos);
  EXPECT_NE(text.find("\"private_key\": null"), std::string::npos);
  EXPECT_NE(text.find("\"private_key_file\": \"/k/x\""), std::string::npos);
  EXPECT_EQ(render_hosts_json({active_host()}).find("secret"), std::string::npos);
}

TEST(ExitCodes, EachErrorKindHasItsCode) {
  EXPECT_EQ(exit_code_for(make_error(errc::auth, "")), 4);
  EXPECT_EQ(exit_code_for(make_error(errc::not_found, "")), 3);
  EXPECT_EQ(exit_code_for(make_error(errc::conflict, "")), 7);
  EXPECT_EQ(exit_code_for(make_error(errc::provisioning_failed, "")), 5);
  EXPECT_EQ(exit_code_for(make_error(errc::unavailable, "")), 6);
  EXPECT_EQ(exit_code_for(make_error(errc::timeout, "")), 6);
  EXPECT_EQ(exit_code_for(make_error(errc::api_error, "")), 2);
  EXPECT_EQ(exit_code_for(make_error(errc::invalid_argument, "")), 1);
  EXPECT_EQ(exit_code_for(make_error(errc::host_key_mismatch, "")), 255);
}

}  // namespace
}  // namespace litterbox::client::cli
