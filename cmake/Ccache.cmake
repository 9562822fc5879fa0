# Compile time is the scarcest resource on our build machines: reuse objects across
# build trees (CCACHE_BASEDIR makes paths relative so presets share the cache).
find_program(CCACHE_EXE ccache)
if(CCACHE_EXE)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env CCACHE_BASEDIR=${CMAKE_SOURCE_DIR}
                                  CCACHE_NOHASHDIR=1 CCACHE_SLOPPINESS=pch_defines,time_macros
                                  ${CCACHE_EXE})
endif()
