#include "hypervisor/libvirt/forward_port.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace litterbox::hypervisor {
namespace {

// A TCP socket on 127.0.0.1; port 0 picks one. Closed with the object.
struct loopback_socket {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  loopback_socket() = default;
  loopback_socket(const loopback_socket&) = delete;
  loopback_socket& operator=(const loopback_socket&) = delete;
  ~loopback_socket() { close(); }
  void close() {
    if (fd >= 0) {
      ::close(fd);
      fd = -1;
    }
  }
  static sockaddr_in address(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
  }
  int local_port() const {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
  }
  void listen_on_any_port() {
    const auto a = address(0);
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::listen(fd, 4), 0);
  }
  void connect_to(int port) {
    const auto a = address(port);
    ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a), 0);
  }
};

TEST(ForwardPort, APortAListenerHoldsIsNotBindableAndIsAgainOnceItCloses) {
  loopback_socket listener;
  listener.listen_on_any_port();
  const int port = listener.local_port();
  EXPECT_FALSE(forward_port_bindable("127.0.0.1", port));
  listener.close();
  EXPECT_TRUE(forward_port_bindable("127.0.0.1", port));
}

TEST(ForwardPort, TheEphemeralPortOfALiveOutgoingConnectionIsNotBindable) {
  loopback_socket listener;
  listener.listen_on_any_port();
  loopback_socket client;
  client.connect_to(listener.local_port());
  EXPECT_FALSE(forward_port_bindable("127.0.0.1", client.local_port()))
      << "what made QEMU's hostfwd fail: an outgoing connection's source port";
}

TEST(ForwardPort, AnEarlierForwardsConnectionLeftInTimeWaitDoesNotMakeItsPortBusy) {
  // The forward of a deleted guest, as libslirp had it: a listener with SO_REUSEADDR whose
  // accepted connection the guest side closed first (and so lingers in TIME_WAIT).
  loopback_socket listener;
  const int one = 1;
  ASSERT_EQ(::setsockopt(listener.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
  listener.listen_on_any_port();
  const int port = listener.local_port();
  loopback_socket client;
  client.connect_to(port);
  const int accepted = ::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(accepted, 0);
  ::close(accepted);  // the forward's side closes first: its socket is the one in TIME_WAIT
  char byte = 0;
  EXPECT_EQ(::read(client.fd, &byte, 1), 0) << "the client saw the close";
  client.close();
  listener.close();
  EXPECT_TRUE(forward_port_bindable("127.0.0.1", port))
      << "libslirp binds with SO_REUSEADDR, and so does the probe";
}

TEST(ForwardPort, WhatIsNotAPortInUseIsLeftForQemuToJudge) {
  EXPECT_TRUE(forward_port_bindable("not-an-address", 22000));
  EXPECT_TRUE(forward_port_bindable("127.0.0.1", 0));
}

TEST(ForwardPort, QemusHostForwardFailureIsRecognisedAndOtherStartFailuresAreNot) {
  EXPECT_TRUE(is_forward_bind_failure(
      "internal error: qemu unexpectedly closed the monitor: 2026-12-02T15:42:08.703613Z "
      "qemu-system-x86_64: -netdev user,id=lbnet0,ipv6=off,hostfwd=tcp:127.0.0.1:37298-:22: "
      "Could not set up host forwarding rule 'tcp:127.0.0.1:37298-:22'"));
  EXPECT_FALSE(is_forward_bind_failure(
      "internal error: qemu unexpectedly closed the monitor: Could not open '/x/disk.qcow2'"));
}

TEST(EphemeralPorts, CountsThePortsOfTheRangeTheKernelMayHandOutAndNotTheReservedOnes) {
  EXPECT_EQ(ephemeral_ports_within(22000, 22999, "32768\t60999\n", "\n"), 0);
  EXPECT_EQ(ephemeral_ports_within(32760, 32779, "32768\t60999\n", "\n"), 12);
  EXPECT_EQ(ephemeral_ports_within(37290, 37305, "32768\t60999\n", "37290-37299,37305\n"), 5);
  EXPECT_EQ(ephemeral_ports_within(40000, 40009, "32768 60999", "40000-40009"), 0);
  EXPECT_EQ(ephemeral_ports_within(60990, 61010, "32768\t60999", ""), 10);
}

TEST(EphemeralPorts, MalformedSysctlTextIsUnknownRatherThanZero) {
  EXPECT_FALSE(ephemeral_ports_within(22000, 22999, "32768", ""));
  EXPECT_FALSE(ephemeral_ports_within(22000, 22999, "low high", ""));
  EXPECT_FALSE(ephemeral_ports_within(22000, 22999, "32768\t60999", "22000-x"));
  EXPECT_FALSE(ephemeral_ports_within(22000, 22999, "32768\t70000", ""));
}

TEST(EphemeralPorts, ThisMachinesSysctlsCanBeRead) {
  EXPECT_TRUE(ephemeral_ports_within(22000, 22999).has_value());
}

}  // namespace
}  // namespace litterbox::hypervisor
