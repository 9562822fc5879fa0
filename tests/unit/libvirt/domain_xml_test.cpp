#include "hypervisor/libvirt/domain_xml.hpp"

#include "hypervisor/errc.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace {

domain_spec sample() {
  domain_spec d;
  d.name = "sb-1c2d3e4f5a6b";
  d.host_id = "0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b";
  d.owner = "litterbox";
  d.acceleration = accel::tcg;
  d.vcpus = 2;
  d.memory_mib = 1536;
  d.kernel = "/boot/vmlinuz";
  d.initrd = "/boot/initrd.img";
  d.cmdline = default_cmdline();
  d.disk = "/var/lib/litterbox/vms/0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b/disk.qcow2";
  d.seed = "/var/lib/litterbox/vms/0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b/seed.iso";
  d.console = "/var/lib/litterbox/vms/0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b/console.log";
  d.ssh_host = "127.0.0.1";
  d.ssh_port = 22017;
  return d;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(DomainXml, TcgUsesQemuTypeAndMaximumCpu) {
  const auto xml = render_domain_xml(sample());
  ASSERT_TRUE(xml) << xml.error().message;
  EXPECT_TRUE(contains(*xml, "<domain type='qemu'"));
  EXPECT_TRUE(contains(*xml, "<cpu mode='maximum'/>"));
  EXPECT_FALSE(contains(*xml, "host-passthrough"));
}

TEST(DomainXml, KvmUsesKvmTypeAndHostPassthrough) {
  auto d = sample();
  d.acceleration = accel::kvm;
  const auto xml = render_domain_xml(d);
  ASSERT_TRUE(xml);
  EXPECT_TRUE(contains(*xml, "<domain type='kvm'"));
  EXPECT_TRUE(contains(*xml, "<cpu mode='host-passthrough'/>"));
}

TEST(DomainXml, BootsTheKernelDirectlyWithSizesFromTheSpec) {
  const auto xml = render_domain_xml(sample());
  ASSERT_TRUE(xml);
  EXPECT_TRUE(contains(*xml, "<name>sb-1c2d3e4f5a6b</name>"));
  EXPECT_TRUE(contains(*xml, "<memory unit='MiB'>1536</memory>"));
  EXPECT_TRUE(contains(*xml, "<vcpu>2</vcpu>"));
  EXPECT_TRUE(contains(*xml, "<kernel>/boot/vmlinuz</kernel>"));
  EXPECT_TRUE(contains(*xml, "<initrd>/boot/initrd.img</initrd>"));
  EXPECT_TRUE(contains(*xml, "<cmdline>root=/dev/vda rw console=ttyS0 ds=nocloud"));
}

TEST(DomainXml, AttachesOverlaySeedSerialFileAndRng) {
  const auto xml = render_domain_xml(sample());
  ASSERT_TRUE(xml);
  const std::string dir = "/var/lib/litterbox/vms/0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b/";
  EXPECT_TRUE(contains(*xml, "<source file='" + dir + "disk.qcow2'/>"));
  EXPECT_TRUE(contains(*xml, "<target dev='vda' bus='virtio'/>"));
  EXPECT_TRUE(contains(*xml, "<source file='" + dir + "seed.iso'/>"));
  EXPECT_TRUE(contains(*xml, "<readonly/>"));
  EXPECT_TRUE(
      contains(*xml, "<serial type='file'>\n      <source path='" + dir + "console.log'/>"));
  EXPECT_TRUE(contains(*xml, "<rng model='virtio'>"));
}

TEST(DomainXml, ForwardsSshFromTheLoopbackPortWithoutIpv6) {
  const auto xml = render_domain_xml(sample());
  ASSERT_TRUE(xml);
  EXPECT_TRUE(contains(
      *xml, "<qemu:arg value='user,id=lbnet0,ipv6=off,hostfwd=tcp:127.0.0.1:22017-:22'/>"));
  EXPECT_TRUE(
      contains(*xml, "virtio-net-pci,netdev=lbnet0,mac=52:54:00:12:34:56,bus=pci.0,addr=0x1e"));
  EXPECT_FALSE(contains(*xml, "restrict=on"));
}

TEST(DomainXml, ProxyTapNameIsLbpAndTheLastTwelveHexDigitsOfTheId) {
  EXPECT_EQ(proxy_tap_name("0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"), "lbp1c2d3e4f5a6b");
  EXPECT_EQ(proxy_tap_name("0190A3B4-5C6D-7E8F-9A0B-1C2D3E4F5A6B"), "lbp1c2d3e4f5a6b");
  EXPECT_LE(proxy_tap_name("0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b").size(), 15U);  // IFNAMSIZ - 1
  EXPECT_EQ(proxy_tap_name("abc-123"), "");
}

TEST(DomainXml, ProxyNicHasItsTapTheFixedMacAndTheSlotAfterTheUserModeNic) {
  auto a = sample();
  a.proxy_tap = proxy_tap_name(a.host_id);
  auto b = sample();
  b.host_id = "0190a3b4-5c6d-7e8f-9a0b-aaaabbbbcccc";
  b.proxy_tap = proxy_tap_name(b.host_id);
  const auto xa = render_domain_xml(a);
  const auto xb = render_domain_xml(b);
  ASSERT_TRUE(xa);
  ASSERT_TRUE(xb);
  for (const auto* x : {&*xa, &*xb}) {
    EXPECT_TRUE(
        contains(*x, "<interface type='ethernet'>\n      <mac address='52:54:00:77:00:02'/>"));
    EXPECT_TRUE(contains(*x,
                         "<model type='virtio'/>\n      <address type='pci' domain='0x0000' "
                         "bus='0x00' slot='0x1f' function='0x0'/>"));
    EXPECT_TRUE(contains(*x, "addr=0x1e'"));
  }
  EXPECT_TRUE(contains(*xa, "<target dev='lbp1c2d3e4f5a6b'/>"));
  EXPECT_TRUE(contains(*xb, "<target dev='lbpaaaabbbbcccc'/>"));
  EXPECT_FALSE(contains(*xa, "lbpaaaabbbbcccc"));
}

TEST(DomainXml, NoProxyTapRendersNoProxyNic) {
  const auto xml = render_domain_xml(sample());
  ASSERT_TRUE(xml);
  EXPECT_FALSE(contains(*xml, "<interface"));
}

TEST(DomainXml, RestrictedNetworkAddsRestrictOn) {
  auto d = sample();
  d.restrict_network = true;
  const auto xml = render_domain_xml(d);
  ASSERT_TRUE(xml);
  EXPECT_TRUE(contains(*xml, "hostfwd=tcp:127.0.0.1:22017-:22,restrict=on'"));
}

TEST(DomainXml, MetadataNamesHostIdAndOwnerAndReadsBack) {
  const auto xml = render_domain_xml(sample());
  ASSERT_TRUE(xml);
  EXPECT_TRUE(contains(*xml, std::string(k_metadata_ns)));
  EXPECT_EQ(owned_host_id(*xml, "litterbox"), "0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b");
  EXPECT_EQ(owned_host_id(*xml, "someone-else"), "");
  EXPECT_EQ(owned_host_id("<domain><name>x</name></domain>", "litterbox"), "");
}

TEST(DomainXml, MetadataElementAsLibvirtReturnsItReadsBack) {
  const std::string meta =
      "<litterbox>\n  <host-id>0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b</host-id>\n"
      "  <owner>litterbox</owner>\n</litterbox>\n";
  EXPECT_EQ(metadata_host_id(meta, "litterbox"), "0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b");
  EXPECT_EQ(metadata_host_id(meta, "other"), "");
}

TEST(DomainXml, EveryDomainHasAGenerationIdAndTheGuestAgentChannel) {
  for (const bool is_template : {false, true}) {
    auto d = sample();
    d.is_template = is_template;
    const auto xml = render_domain_xml(d);
    ASSERT_TRUE(xml);
    EXPECT_TRUE(contains(*xml, "  <genid/>\n"));
    EXPECT_TRUE(contains(*xml,
                         "<channel type='unix'>\n      <source mode='bind'/>\n"
                         "      <target type='virtio' name='org.qemu.guest_agent.0'/>"));
  }
}

TEST(DomainXml, ATemplateGuestIsTaggedAsTemplateAndIsNoHost) {
  auto d = sample();
  d.is_template = true;
  const auto xml = render_domain_xml(d);
  ASSERT_TRUE(xml);
  EXPECT_TRUE(
      contains(*xml, "<lb:template-id>0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b</lb:template-id>"));
  EXPECT_FALSE(contains(*xml, "host-id"));
  EXPECT_EQ(owned_host_id(*xml, "litterbox"), "");
  const std::string meta =
      "<litterbox><template-id>0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b</template-id>"
      "<owner>litterbox</owner></litterbox>";
  EXPECT_EQ(metadata_host_id(meta, "litterbox"), "");
  EXPECT_EQ(metadata_template_id(meta, "litterbox"), "0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b");
  EXPECT_EQ(metadata_template_id(meta, "other"), "");
  const auto host = render_domain_xml(sample());
  ASSERT_TRUE(host);
  EXPECT_EQ(metadata_template_id(*host, "litterbox"), "");
}

TEST(DomainXml, OnlyATemplateGuestReportsFreePagesThroughABalloon) {
  auto t = sample();
  t.is_template = true;
  const auto tmpl = render_domain_xml(t);
  ASSERT_TRUE(tmpl);
  EXPECT_TRUE(contains(*tmpl, "<memballoon model='virtio' freePageReporting='on'/>"));
  EXPECT_FALSE(contains(*tmpl, "<memballoon model='none'/>"));
  const auto host = render_domain_xml(sample());
  ASSERT_TRUE(host);
  EXPECT_TRUE(contains(*host, "<memballoon model='none'/>"));
  EXPECT_FALSE(contains(*host, "freePageReporting"));
}

TEST(DomainXml, EscapesEveryValue) {
  auto d = sample();
  d.name = "a<b>&'\"";
  d.cmdline = "x='<y>'";
  d.disk = "/tmp/a'b.qcow2";
  const auto xml = render_domain_xml(d);
  ASSERT_TRUE(xml);
  EXPECT_TRUE(contains(*xml, "<name>a&lt;b&gt;&amp;&apos;&quot;</name>"));
  EXPECT_TRUE(contains(*xml, "<cmdline>x=&apos;&lt;y&gt;&apos;</cmdline>"));
  EXPECT_TRUE(contains(*xml, "<source file='/tmp/a&apos;b.qcow2'/>"));
}

TEST(DomainXml, RejectsNonIpv4ForwardAddressAndBadPorts) {
  auto d = sample();
  d.ssh_host = "localhost,hostfwd=tcp::1-:22";
  EXPECT_FALSE(render_domain_xml(d));
  d = sample();
  d.ssh_port = 0;
  EXPECT_FALSE(render_domain_xml(d));
  d.ssh_port = 70000;
  const auto r = render_domain_xml(d);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, make_error_code(errc::vm_create_failed));
}

TEST(DomainXml, IsDeterministic) {
  EXPECT_EQ(render_domain_xml(sample()).value(), render_domain_xml(sample()).value());
}

TEST(ChooseAccel, AutoFollowsHardwareKvm) {
  EXPECT_EQ(choose_accel("auto", true).value(), accel::kvm);
  EXPECT_EQ(choose_accel("auto", false).value(), accel::tcg);
  EXPECT_EQ(choose_accel("tcg", true).value(), accel::tcg);
  EXPECT_EQ(choose_accel("kvm", true).value(), accel::kvm);
}

TEST(ChooseAccel, KvmWithoutHardwareAndUnknownSettingsFail) {
  EXPECT_FALSE(choose_accel("kvm", false));
  EXPECT_FALSE(choose_accel("hvf", true));
}

TEST(HostHasHardwareKvm, OnlyKvmIntelOrKvmAmdCount) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("lb-sysmodule-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "kvm");
  std::filesystem::create_directories(dir / "kvm_pvm");
  EXPECT_FALSE(host_has_hardware_kvm(dir));
  std::filesystem::create_directories(dir / "kvm_amd");
  EXPECT_TRUE(host_has_hardware_kvm(dir));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace litterbox::hypervisor
