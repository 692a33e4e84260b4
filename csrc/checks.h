// Argument checks for the bindings. MASC_CHECK throws std::invalid_argument, which pybind11
// translates to ValueError; the message should name the offending argument and its shape.
#pragma once

#include <stdexcept>
#include <string>

#define MASC_CHECK(cond, msg)                                          \
  do {                                                                 \
    if (!(cond)) {                                                     \
      throw std::invalid_argument(std::string("masc_fast._C: ") + (msg)); \
    }                                                                  \
  } while (false)
