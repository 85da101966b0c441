# ShoalOracle.cmake: the PyTorch references of docs/MODEL.md that the oracle tests hold the C code
# to. tests/reference/moe_ref.py (the project's own) is always tested. SHOAL_ORACLE (a cache
# variable, or the SHOAL_ORACLE environment variable when the cache leaves it empty) may name a
# second, outside reference with the same interface; its tests are registered as well, as
# <test>_outside, so that both are checked.
set(SHOAL_REFERENCE ${CMAKE_SOURCE_DIR}/tests/reference/moe_ref.py)
set(SHOAL_ORACLE "" CACHE FILEPATH
    "an outside reference of docs/MODEL.md (moe_ref.py interface), tested as well as tests/reference")
if(NOT SHOAL_ORACLE AND DEFINED ENV{SHOAL_ORACLE})
  set(SHOAL_ORACLE "$ENV{SHOAL_ORACLE}")
endif()
if(SHOAL_ORACLE AND NOT EXISTS "${SHOAL_ORACLE}")
  message(FATAL_ERROR "SHOAL_ORACLE=${SHOAL_ORACLE} does not exist (-DSHOAL_ORACLE= to unset)")
endif()
if(SHOAL_ORACLE)
  message(STATUS "oracle tests: tests/reference and ${SHOAL_ORACLE} (*_outside)")
endif()
# The references need Debian's python3-torch, i.e. the system interpreter.
set(SHOAL_PYTHON /usr/bin/python3)

# shoal_oracle_test(NAME COMMAND arg... [PROPERTIES prop value...] [REFERENCE_ONLY]): registers
# NAME with @ORACLE@ in the command replaced by tests/reference/moe_ref.py, and NAME_outside with
# it replaced by SHOAL_ORACLE when that is set (not with REFERENCE_ONLY). A test whose command
# starts with SHOAL_PYTHON skips (77) with the reason where that interpreter is missing.
function(shoal_oracle_test name)
  cmake_parse_arguments(O "REFERENCE_ONLY" "" "COMMAND;PROPERTIES" ${ARGN})
  set(names ${name})
  set(paths ${SHOAL_REFERENCE})
  if(SHOAL_ORACLE AND NOT O_REFERENCE_ONLY)
    list(APPEND names ${name}_outside)
    list(APPEND paths ${SHOAL_ORACLE})
  endif()
  list(GET O_COMMAND 0 program)
  foreach(n p IN ZIP_LISTS names paths)
    string(REPLACE "@ORACLE@" "${p}" cmd "${O_COMMAND}")
    if(program STREQUAL SHOAL_PYTHON AND NOT EXISTS ${SHOAL_PYTHON})
      set(cmd sh -c "echo 'SKIP: ${SHOAL_PYTHON} not found (apt-get install python3-torch)' && exit 77")
    endif()
    add_test(NAME ${n} COMMAND ${cmd})
    set_tests_properties(${n} PROPERTIES SKIP_RETURN_CODE 77 ${O_PROPERTIES})
  endforeach()
endfunction()
