# Included by CTest (through TEST_INCLUDE_FILES, see lb_add_gtest in Testing.cmake) before it
# runs tests: lists the GoogleTest suites of LB_GTEST_EXECUTABLE and writes LB_GTEST_CTEST_FILE
# with one CTest test per suite (`--gtest_filter=<suite>.*`), named after the suite. The list
# is made again only when the binary (or this script) is newer than the file.
#
# A suite's test runs its cases in one process, in order, as GoogleTest does when the binary is
# run by hand: SetUpTestSuite (e.g. the API suites' server and database) happens once per suite
# instead of once per case. A failing case still names itself: GoogleTest prints
# `[  FAILED  ] <suite>.<case>` and `--output-on-failure` shows it. The timeout of a suite is
# LB_GTEST_CASE_TIMEOUT (what one case had as a test of its own) plus 10 s for each further
# case: a hung case still ends the suite within minutes. Its COST (the order CTest starts
# tests in until it has measured them) is its number of cases, so that in a fresh build tree
# the big suites start first and do not finish alone at the end.
if(EXISTS "${LB_GTEST_EXECUTABLE}" AND
   (NOT EXISTS "${LB_GTEST_CTEST_FILE}" OR
    "${LB_GTEST_EXECUTABLE}" IS_NEWER_THAN "${LB_GTEST_CTEST_FILE}" OR
    "${CMAKE_CURRENT_LIST_FILE}" IS_NEWER_THAN "${LB_GTEST_CTEST_FILE}"))
  execute_process(
    COMMAND "${LB_GTEST_EXECUTABLE}" --gtest_list_tests
    WORKING_DIRECTORY "${LB_GTEST_WORKING_DIR}"
    TIMEOUT 60
    OUTPUT_VARIABLE lb_output
    RESULT_VARIABLE lb_result)
  if(NOT lb_result EQUAL 0)
    message(FATAL_ERROR "listing the tests of ${LB_GTEST_EXECUTABLE} failed (${lb_result}):\n"
                        "${lb_output}")
  endif()
  string(REPLACE ";" "\\;" lb_output "${lb_output}")
  string(REPLACE "\n" ";" lb_lines "${lb_output}")
  set(lb_suites "")
  set(lb_suite "")
  foreach(lb_line IN LISTS lb_lines)
    if(lb_line MATCHES "^  ")
      if(NOT lb_suite STREQUAL "")
        math(EXPR lb_cases_${lb_suite_index} "${lb_cases_${lb_suite_index}} + 1")
      endif()
    elseif(lb_line MATCHES "^([^ #]+)\\.( *#.*)?$")
      set(lb_suite "${CMAKE_MATCH_1}")
      list(LENGTH lb_suites lb_suite_index)
      list(APPEND lb_suites "${lb_suite}")
      set(lb_cases_${lb_suite_index} 0)
    endif()
  endforeach()
  set(lb_script "")
  set(lb_index 0)
  foreach(lb_suite IN LISTS lb_suites)
    math(EXPR lb_timeout "${LB_GTEST_CASE_TIMEOUT} + 10 * (${lb_cases_${lb_index}} - 1)")
    string(APPEND lb_script
      "add_test([==[${lb_suite}]==] [==[${LB_GTEST_EXECUTABLE}]==] "
      "[==[--gtest_filter=${lb_suite}.*]==])\n"
      "set_tests_properties([==[${lb_suite}]==] PROPERTIES LABELS [==[${LB_GTEST_LABEL}]==] "
      "TIMEOUT ${lb_timeout} COST ${lb_cases_${lb_index}} WORKING_DIRECTORY [==[${LB_GTEST_WORKING_DIR}]==])\n")
    math(EXPR lb_index "${lb_index} + 1")
  endforeach()
  file(WRITE "${LB_GTEST_CTEST_FILE}" "${lb_script}")
endif()
if(EXISTS "${LB_GTEST_CTEST_FILE}")
  include("${LB_GTEST_CTEST_FILE}")
else()
  add_test([==[${LB_GTEST_TARGET}_NOT_BUILT]==] [==[${LB_GTEST_TARGET}_NOT_BUILT]==])
endif()
