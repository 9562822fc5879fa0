# lb_add_gtest(<target> LABEL <unit|integration|e2e> SOURCES <files…> LIBS <targets…>)
# One binary per module and kind; each TEST becomes its own CTest test carrying the label, so
# `ctest -L unit` runs in seconds.
function(lb_add_gtest target)
  cmake_parse_arguments(T "" "LABEL;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  add_executable(${target} ${T_SOURCES})
  target_link_libraries(${target} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main
                                          litterbox::options litterbox::warnings)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  gtest_discover_tests(${target}
    DISCOVERY_MODE PRE_TEST
    PROPERTIES LABELS ${T_LABEL} TIMEOUT ${T_TIMEOUT})
endfunction()
