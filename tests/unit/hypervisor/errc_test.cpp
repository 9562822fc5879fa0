#include "hypervisor/errc.hpp"

#include <gtest/gtest.h>

namespace litterbox::hypervisor {
namespace {

TEST(HypervisorErrc, CloneCodesHaveTheirKindNames) {
  EXPECT_EQ(kind_name(errc::clone_unsupported), "CloneUnsupported");
  EXPECT_EQ(kind_name(errc::template_missing), "TemplateMissing");
  EXPECT_EQ(kind_name(errc::port_busy), "PortBusy");
  EXPECT_EQ(kind_name(errc::boot_timeout), "BootTimeout");
}

TEST(HypervisorErrc, CodesOfOtherCategoriesAreInternalErrors) {
  EXPECT_EQ(kind_name(std::make_error_code(std::errc::io_error)), "InternalError");
}

}  // namespace
}  // namespace litterbox::hypervisor
