#pragma once

#include <cstdio>
#include <cstdlib>

/// A broken invariant stops the process (STYLE.md). Never use it for anything a caller or the
/// environment can cause.
#define LB_ASSERT(cond)                                                                 \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (false)
