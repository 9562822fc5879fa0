# lb_add_gtest(<target> LABEL <unit|integration|e2e> [TIMEOUT <s>] [ONE_TEST_PER <case|suite>]
#              SOURCES <files…> LIBS <targets…>)
# One binary per module and kind. Unit and e2e binaries: each TEST becomes its own CTest test
# carrying the label, so `ctest -L unit` runs in seconds. Integration binaries: each test suite
# becomes one CTest test (GtestSuites.cmake), so a suite's SetUpTestSuite (a litterboxd, a
# migrated database) runs once, not once per case, and CTest still runs suites in parallel.
# TIMEOUT is per case (default 300 s); a suite gets it plus 10 s for each further case.
function(lb_add_gtest target)
  cmake_parse_arguments(T "" "LABEL;TIMEOUT;ONE_TEST_PER" "SOURCES;LIBS" ${ARGN})
  add_executable(${target} ${T_SOURCES})
  target_link_libraries(${target} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main
                                          litterbox::options litterbox::warnings)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  if(NOT T_ONE_TEST_PER)
    if(T_LABEL STREQUAL "integration")
      set(T_ONE_TEST_PER suite)
    else()
      set(T_ONE_TEST_PER case)
    endif()
  endif()
  if(T_ONE_TEST_PER STREQUAL "case")
    gtest_discover_tests(${target}
      DISCOVERY_MODE PRE_TEST
      PROPERTIES LABELS ${T_LABEL} TIMEOUT ${T_TIMEOUT})
  elseif(T_ONE_TEST_PER STREQUAL "suite")
    set(include_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_suites_include.cmake")
    file(GENERATE OUTPUT "${include_file}" CONTENT
"set(LB_GTEST_TARGET [==[${target}]==])
set(LB_GTEST_EXECUTABLE [==[$<TARGET_FILE:${target}>]==])
set(LB_GTEST_WORKING_DIR [==[${CMAKE_CURRENT_BINARY_DIR}]==])
set(LB_GTEST_CTEST_FILE [==[${CMAKE_CURRENT_BINARY_DIR}/${target}_suites.cmake]==])
set(LB_GTEST_LABEL [==[${T_LABEL}]==])
set(LB_GTEST_CASE_TIMEOUT ${T_TIMEOUT})
include([==[${PROJECT_SOURCE_DIR}/cmake/GtestSuites.cmake]==])
")
    set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${include_file}")
  else()
    message(FATAL_ERROR "lb_add_gtest(${target}): ONE_TEST_PER is case or suite, not "
                        "'${T_ONE_TEST_PER}'")
  endif()
endfunction()
