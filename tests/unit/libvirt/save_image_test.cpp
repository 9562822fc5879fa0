#include "hypervisor/libvirt/save_image.hpp"

#include "hypervisor/errc.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace litterbox::hypervisor {
namespace {

constexpr std::string_view k_tdir =
    "/var/lib/litterbox/templates/0190a3b4-0000-7000-8000-000000000001";

// A domain XML as libvirt 9.0 saves it for a template guest (trimmed to what matters).
std::string saved_xml() {
  const std::string d(k_tdir);
  return "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
         "  <name>lbt-000000000001</name>\n"
         "  <uuid>6d1c8f3e-1111-4222-8333-944455556666</uuid>\n"
         "  <genid>0a1b2c3d-aaaa-4bbb-8ccc-dddddddddddd</genid>\n"
         "  <metadata>\n"
         "    <lb:litterbox xmlns:lb=\"https://litterbox.dev/xmlns/domain/1\">"
         "<lb:template-id>0190a3b4-0000-7000-8000-000000000001</lb:template-id>"
         "<lb:owner>litterbox</lb:owner></lb:litterbox>\n"
         "  </metadata>\n"
         "  <devices>\n"
         "    <disk type='file' device='disk'>\n"
         "      <source file='" +
         d +
         "/disk.qcow2'/>\n"
         "      <target dev='vda' bus='virtio'/>\n"
         "      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>\n"
         "    </disk>\n"
         "    <disk type='file' device='disk'>\n"
         "      <source file='" +
         d +
         "/seed.iso'/>\n"
         "      <target dev='vdb' bus='virtio'/>\n"
         "    </disk>\n"
         "    <serial type='file'>\n"
         "      <source path='" +
         d +
         "/console.log'/>\n"
         "    </serial>\n"
         "    <console type='file'>\n"
         "      <source path='" +
         d +
         "/console.log'/>\n"
         "    </console>\n"
         "    <interface type='ethernet'>\n"
         "      <mac address='52:54:00:77:00:02'/>\n"
         "      <target dev='lbp000000000001'/>\n"
         "      <model type='virtio'/>\n"
         "      <alias name='net0'/>\n"
         "      <address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x0'/>\n"
         "    </interface>\n"
         "  </devices>\n"
         "  <qemu:commandline>\n"
         "    <qemu:arg value='user,id=lbnet0,ipv6=off,hostfwd=tcp:127.0.0.1:31000-:22'/>\n"
         "  </qemu:commandline>\n"
         "</domain>\n";
}

clone_names names() {
  clone_names n;
  n.template_id = "0190a3b4-0000-7000-8000-000000000001";
  n.template_disk = std::string(k_tdir) + "/disk.qcow2";
  n.template_console = std::string(k_tdir) + "/console.log";
  n.host_id = "0190a3b4-0000-7000-8000-0000000000aa";
  n.name = "sb-0000000000aa";
  n.uuid = "0190a3b4-0000-7000-8000-0000000000aa";
  n.disk = "/var/lib/litterbox/vms/0190a3b4-0000-7000-8000-0000000000aa/disk.qcow2";
  n.console = "/var/lib/litterbox/vms/0190a3b4-0000-7000-8000-0000000000aa/console.log";
  n.ssh_host = "127.0.0.1";
  n.ssh_port = 32123;
  n.template_tap = "lbp000000000001";
  n.tap = "lbp0000000000aa";
  return n;
}

// A save image head as virQEMUSaveDataWrite lays it out, with 64 KiB of slack.
std::string image(std::string_view xml, std::string_view cookie, std::string_view magic,
                  std::uint32_t version = 2, std::uint32_t compressed = 0) {
  const std::uint32_t xml_len = static_cast<std::uint32_t>(xml.size() + 1);
  const std::uint32_t data_len =
      xml_len + static_cast<std::uint32_t>(cookie.empty() ? 0 : cookie.size() + 1) + 65536;
  std::string out(k_save_header_size + data_len, '\0');
  std::memcpy(out.data(), magic.data(), 16);
  const std::uint32_t words[5] = {version, data_len, 1, compressed, cookie.empty() ? 0U : xml_len};
  std::memcpy(out.data() + 16, words, sizeof words);
  std::memcpy(out.data() + k_save_header_size, xml.data(), xml.size());
  std::memcpy(out.data() + k_save_header_size + xml_len, cookie.data(), cookie.size());
  return out + "QEVM-stream";
}

constexpr std::string_view k_cookie = "<cookie><cpu mode='custom'/></cookie>";

TEST(SaveImage, ParsesHeaderXmlCookieAndWhereTheStreamStarts) {
  const std::string bytes = image(saved_xml(), k_cookie, "LibvirtQemudSave");
  const auto head = parse_save_head(bytes);
  ASSERT_TRUE(head) << head.error().message;
  EXPECT_EQ(head->version, 2U);
  EXPECT_EQ(head->was_running, 1U);
  EXPECT_EQ(head->xml, saved_xml());
  EXPECT_TRUE(head->has_cookie);
  EXPECT_EQ(head->cookie, k_cookie);
  EXPECT_EQ(bytes.substr(head->stream_offset()), "QEVM-stream");
}

TEST(SaveImage, RefusesPartialCompressedForeignAndTruncatedImages) {
  const std::string xml = saved_xml();
  for (const auto& bad :
       {image(xml, k_cookie, "LibvirtQemudPart"), image(xml, k_cookie, "LibvirtQemudSave", 2, 1),
        image(xml, k_cookie, "LibvirtQemudSave", 3), image(xml, k_cookie, "NotLibvirtAtAll!"),
        image(xml, k_cookie, "LibvirtQemudSave").substr(0, 500), std::string("LibvirtQemudSave")}) {
    const auto head = parse_save_head(bad);
    ASSERT_FALSE(head);
    EXPECT_EQ(head.error().code, errc::template_missing);
  }
}

TEST(SaveImage, RenderedHeadKeepsDataLenAndCookieSoTheStreamFollowsUnchanged) {
  const std::string bytes = image(saved_xml(), k_cookie, "LibvirtQemudSave");
  const auto head = parse_save_head(bytes);
  ASSERT_TRUE(head);
  const std::string clone = "<domain><name>sb-x</name></domain>\n";
  const auto out = render_save_head(*head, clone);
  ASSERT_TRUE(out) << out.error().message;
  EXPECT_EQ(out->size(), head->stream_offset());
  const auto again = parse_save_head(*out + "QEVM-stream");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->xml, clone);
  EXPECT_EQ(again->cookie, k_cookie);
  EXPECT_EQ(again->data_len, head->data_len);
  EXPECT_EQ(again->stream_offset(), head->stream_offset());
}

TEST(SaveImage, RenderedHeadOfAnImageWithoutCookieHasNone) {
  const auto head = parse_save_head(image(saved_xml(), "", "LibvirtQemudSave"));
  ASSERT_TRUE(head);
  EXPECT_FALSE(head->has_cookie);
  const auto out = render_save_head(*head, "<domain/>");
  ASSERT_TRUE(out);
  std::uint32_t cookie_offset = 1;
  std::memcpy(&cookie_offset, out->data() + 32, sizeof cookie_offset);
  EXPECT_EQ(cookie_offset, 0U);
}

TEST(SaveImage, AnXmlLargerThanTheSavedDataBlockIsRefused) {
  const auto head = parse_save_head(image(saved_xml(), k_cookie, "LibvirtQemudSave"));
  ASSERT_TRUE(head);
  const auto out = render_save_head(*head, std::string(head->data_len, 'x'));
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, errc::vm_create_failed);
}

TEST(CloneXml, RenamesReidentifiesAndRepointsTheCloneButKeepsDevicesAndGenid) {
  const auto xml = clone_domain_xml(saved_xml(), names());
  ASSERT_TRUE(xml) << xml.error().message;
  const auto has = [&](std::string_view s) { return xml->find(s) != std::string::npos; };
  EXPECT_TRUE(has("<name>sb-0000000000aa</name>"));
  EXPECT_TRUE(has("<uuid>0190a3b4-0000-7000-8000-0000000000aa</uuid>"));
  EXPECT_TRUE(has("<lb:host-id>0190a3b4-0000-7000-8000-0000000000aa</lb:host-id>"));
  EXPECT_TRUE(has("<lb:owner>litterbox</lb:owner>"));
  EXPECT_TRUE(has("file='/var/lib/litterbox/vms/0190a3b4-0000-7000-8000-0000000000aa/disk.qcow2'"));
  EXPECT_TRUE(
      has("path='/var/lib/litterbox/vms/0190a3b4-0000-7000-8000-0000000000aa/console.log'"));
  EXPECT_TRUE(has("hostfwd=tcp:127.0.0.1:32123-:22'"));
  // The seed stays the template's (blanked) one; devices and addresses are untouched.
  EXPECT_TRUE(has(std::string(k_tdir) + "/seed.iso"));
  EXPECT_TRUE(has("slot='0x04'"));
  EXPECT_TRUE(has("<genid>"));
  EXPECT_FALSE(has("lbt-000000000001"));
  EXPECT_FALSE(has("6d1c8f3e-1111-4222-8333-944455556666"));
  EXPECT_FALSE(has("template-id"));
  EXPECT_FALSE(has(std::string(k_tdir) + "/disk.qcow2"));
}

TEST(CloneXml, TheProxyNicGetsTheClonesTapAndKeepsMacAndSlot) {
  const auto xml = clone_domain_xml(saved_xml(), names());
  ASSERT_TRUE(xml) << xml.error().message;
  const auto has = [&](std::string_view s) { return xml->find(s) != std::string::npos; };
  EXPECT_TRUE(has("<target dev='lbp0000000000aa'/>"));
  EXPECT_FALSE(has("lbp000000000001"));
  EXPECT_TRUE(has("<mac address='52:54:00:77:00:02'/>"));
  EXPECT_TRUE(has("slot='0x1f'"));
  auto no_tap = names();
  no_tap.tap.clear();
  EXPECT_FALSE(clone_domain_xml(saved_xml(), no_tap));
  auto other_template = names();
  other_template.template_tap = "lbp999999999999";
  EXPECT_FALSE(clone_domain_xml(saved_xml(), other_template));
}

TEST(CloneXml, TheTemplateDisksRecordedBackingChainIsDroppedSoLibvirtProbesTheClones) {
  auto with_chain = saved_xml();
  with_chain.insert(with_chain.find("      <target dev='vda'"),
                    "      <backingStore type='file'>\n        <format type='qcow2'/>\n"
                    "        <source file='/var/lib/litterbox/images/base.qcow2'/>\n"
                    "        <backingStore/>\n      </backingStore>\n");
  const auto xml = clone_domain_xml(with_chain, names());
  ASSERT_TRUE(xml) << xml.error().message;
  EXPECT_EQ(xml->find("backingStore"), std::string::npos);
  EXPECT_EQ(xml->find("base.qcow2"), std::string::npos);
  EXPECT_NE(xml->find("<target dev='vda'"), std::string::npos);
}

TEST(CloneXml, BothTheSerialAndItsConsoleWriteToTheClonesConsoleFile) {
  const auto xml = clone_domain_xml(saved_xml(), names());
  ASSERT_TRUE(xml);
  const std::string clone_console =
      "path='/var/lib/litterbox/vms/0190a3b4-0000-7000-8000-0000000000aa/console.log'";
  const auto first = xml->find(clone_console);
  ASSERT_NE(first, std::string::npos);
  EXPECT_NE(xml->find(clone_console, first + 1), std::string::npos);
  EXPECT_EQ(xml->find(std::string(k_tdir) + "/console.log"), std::string::npos);
}

TEST(CloneXml, SavedXmlMissingWhatMustBeReplacedIsRefused) {
  auto no_fwd = saved_xml();
  no_fwd.replace(no_fwd.find("hostfwd"), 7, "nofwd");
  auto two_disks = saved_xml();
  two_disks.replace(two_disks.find("seed.iso"), 8, "disk.qcow2");
  auto no_meta = saved_xml();
  no_meta.replace(no_meta.find("template-id"), 11, "other-id");
  for (const auto& bad : {no_fwd, two_disks, no_meta}) {
    const auto xml = clone_domain_xml(bad, names());
    ASSERT_FALSE(xml);
    EXPECT_EQ(xml.error().code, errc::vm_create_failed);
  }
}

TEST(CloneXml, EscapesTheCloneNamesAndRefusesABadForward) {
  auto n = names();
  n.name = "a<b";
  const auto xml = clone_domain_xml(saved_xml(), n);
  ASSERT_TRUE(xml);
  EXPECT_NE(xml->find("<name>a&lt;b</name>"), std::string::npos);
  n = names();
  n.ssh_host = "::1";
  EXPECT_FALSE(clone_domain_xml(saved_xml(), n));
  n = names();
  n.ssh_port = 70000;
  EXPECT_FALSE(clone_domain_xml(saved_xml(), n));
}

}  // namespace
}  // namespace litterbox::hypervisor
