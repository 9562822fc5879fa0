# lb_embed(<target> <namespace> <var> <file>...): compiles files into the binary as
# std::string_view constants so the executable needs nothing from the source tree at run time.
function(lb_embed target ns)
  set(out_cpp ${CMAKE_CURRENT_BINARY_DIR}/${target}_embedded.cpp)
  set(entries "")
  set(deps "")
  math(EXPR last "${ARGC} - 1")
  foreach(i RANGE 2 ${last} 2)
    math(EXPR j "${i} + 1")
    set(var ${ARGV${i}})
    set(file ${CMAKE_CURRENT_SOURCE_DIR}/${ARGV${j}})
    list(APPEND entries "${var}=${file}")
    list(APPEND deps ${file})
  endforeach()
  add_custom_command(
    OUTPUT ${out_cpp}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out_cpp} -DNS=${ns} "-DENTRIES=${entries}"
            -P ${PROJECT_SOURCE_DIR}/cmake/EmbedGen.cmake
    DEPENDS ${deps} ${PROJECT_SOURCE_DIR}/cmake/EmbedGen.cmake
    VERBATIM)
  target_sources(${target} PRIVATE ${out_cpp})
endfunction()
