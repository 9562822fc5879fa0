#include "controlplane/http/wire_profile.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace litterbox::controlplane::http {
namespace {

using json = nlohmann::ordered_json;

schema::host sample_host() {
  schema::host h;
  h.id = "0192f3a4-0000-7000-8000-00000000abcd";
  h.name = schema::host_name_for(h.id);
  h.status = schema::host_status::active;
  h.provider = "libvirt";
  h.image = "127.0.0.1:5000/litterbox/debian:12";
  h.image_digest = "sha256:00";
  h.instance_type = "small";
  h.cpus = 2;
  h.memory_mib = 2048;
  h.disk_gb = 20;
  h.ssh_host = "127.0.0.1";
  h.ssh_port = 22001;
  h.internal_ssh_host = "192.168.122.7";
  h.ssh_username = "agent";
  h.known_hosts = "[127.0.0.1]:22001 ssh-ed25519 AAAA";
  h.private_key = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
  h.created_at = timestamp(std::chrono::seconds(1'800'000'000));
  h.updated_at = h.created_at + std::chrono::seconds(3);
  h.activated_at = h.updated_at;
  h.expires_at = h.created_at + std::chrono::hours(24);
  return h;
}

std::vector<std::string> keys_of(const json& j) {
  std::vector<std::string> keys;
  for (const auto& item : j.items()) {
    keys.push_back(item.key());
  }
  return keys;
}

constexpr schema::host_status k_statuses[] = {
    schema::host_status::provisioning, schema::host_status::pulling_image,
    schema::host_status::creating_vm,  schema::host_status::bootstrapping,
    schema::host_status::active,       schema::host_status::deleting,
    schema::host_status::error,
};

TEST(WireProfile, LitterboxHostIsExactlyTheSchemaRendering) {
  const auto h = sample_host();
  EXPECT_EQ(host_json(h, wire_profile::litterbox), schema::to_json(h));
  EXPECT_EQ(keys_of(schema::to_json(h)), host_fields(wire_profile::litterbox));
}

TEST(WireProfile, DrukboxHostHasExactlyDrukboxHostOutFieldsInItsOrder) {
  // API.md "Wire profiles", verbatim.
  const std::vector<std::string> host_out{"id",
                                          "name",
                                          "status",
                                          "provider",
                                          "image",
                                          "instance_type",
                                          "disk_gb",
                                          "external_ssh_host",
                                          "external_ssh_port",
                                          "ssh_username",
                                          "internal_ssh_host",
                                          "known_hosts",
                                          "tailscale_device_id",
                                          "private_key",
                                          "last_error",
                                          "created_at",
                                          "updated_at",
                                          "activated_at",
                                          "expires_at"};
  EXPECT_EQ(host_fields(wire_profile::drukbox), host_out);
  EXPECT_EQ(keys_of(host_json(sample_host(), wire_profile::drukbox)), host_out);
}

TEST(WireProfile, DrukboxHostCarriesTheLitterboxValueOfEveryFieldItKeeps) {
  for (const auto status : k_statuses) {
    auto h = sample_host();
    h.status = status;
    const auto full = host_json(h, wire_profile::litterbox);
    const auto drukbox = host_json(h, wire_profile::drukbox);
    for (const auto& [key, value] : drukbox.items()) {
      ASSERT_TRUE(full.contains(key)) << key;
      if (key != "status") {
        EXPECT_EQ(value, full[key]) << key;
      }
    }
    EXPECT_EQ(drukbox["status"], status_name(status, wire_profile::drukbox));
  }
}

TEST(WireProfile, DrukboxReportsPullingImageAsProvisioningAndKeepsEveryOtherStatus) {
  for (const auto status : k_statuses) {
    EXPECT_EQ(status_name(status, wire_profile::litterbox), schema::to_string(status));
    const auto expected = status == schema::host_status::pulling_image
                              ? std::string_view("provisioning")
                              : schema::to_string(status);
    EXPECT_EQ(status_name(status, wire_profile::drukbox), expected) << schema::to_string(status);
  }
}

TEST(WireProfile, NullableFieldsStayNullInTheDrukboxShape) {
  auto h = sample_host();
  h.instance_type.reset();
  h.disk_gb.reset();
  h.internal_ssh_host.reset();
  h.private_key.reset();
  h.activated_at.reset();
  h.expires_at.reset();
  const auto j = host_json(h, wire_profile::drukbox);
  for (const char* k : {"instance_type", "disk_gb", "internal_ssh_host", "tailscale_device_id",
                        "private_key", "activated_at", "expires_at"}) {
    EXPECT_TRUE(j.at(k).is_null()) << k << ": " << j.dump();
  }
}

TEST(StatusFilter, DrukboxProvisioningAlsoSelectsPullingImage) {
  using v = std::vector<std::string>;
  EXPECT_EQ(status_filter({"provisioning"}, wire_profile::drukbox),
            (v{"provisioning", "pulling_image"}));
  EXPECT_EQ(status_filter({"pulling_image", "provisioning"}, wire_profile::drukbox),
            (v{"pulling_image", "provisioning"}));
  EXPECT_EQ(status_filter({"active", "error"}, wire_profile::drukbox), (v{"active", "error"}));
  EXPECT_EQ(status_filter({}, wire_profile::drukbox), v{});
  EXPECT_EQ(status_filter({"provisioning"}, wire_profile::litterbox), v{"provisioning"});
  EXPECT_EQ(status_filter({"bogus"}, wire_profile::drukbox), v{"bogus"})
      << "validation stays host_service's";
}

schema::doctor_report sample_report() {
  schema::doctor_report r;
  r.ok = false;
  r.active_provider = "libvirt";
  r.checks = {{"database", true, "connected", 1.5, ""},
              {"libvirt", false, "cannot reach qemu:///system", 0.25, "start libvirtd"}};
  return r;
}

TEST(DoctorBody, LitterboxIsTheSchemaRendering) {
  EXPECT_EQ(doctor_body(sample_report(), wire_profile::litterbox),
            schema::doctor_json(sample_report()));
}

TEST(DoctorBody, DrukboxHasTailscaleDisabledWholeMillisecondsAndNullForNoHint) {
  EXPECT_EQ(doctor_body(sample_report(), wire_profile::drukbox),
            R"({"ok":false,"active_provider":"libvirt","tailscale_enabled":false,"checks":[)"
            R"({"name":"database","status":"ok","detail":"connected","latency_ms":2,"hint":null},)"
            R"({"name":"libvirt","status":"fail","detail":"cannot reach qemu:///system",)"
            R"("latency_ms":0,"hint":"start libvirtd"}]})");
}

TEST(WireProfile, PrefixesAndNames) {
  EXPECT_EQ(path_prefix(wire_profile::litterbox), "");
  EXPECT_EQ(path_prefix(wire_profile::drukbox), "/drukbox");
  EXPECT_EQ(to_string(wire_profile::litterbox), "litterbox");
  EXPECT_EQ(to_string(wire_profile::drukbox), "drukbox");
}

}  // namespace
}  // namespace litterbox::controlplane::http
