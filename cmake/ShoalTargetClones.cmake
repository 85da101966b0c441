# ShoalTargetClones: does this C compiler build target_clones("arch=x86-64-v3", "default")
# functions that other translation units can call? Sets SHOAL_HAVE_TARGET_CLONES (cached).
# gcc 12 does. clang 14 compiles the attribute but names the dispatcher "f.ifunc", so a call from
# another file is an undefined reference at link time: the probe links such a call, and
# kernels/vexp.h turns SHOAL_TARGET_CLONES into nothing where it fails (baseline x86-64 code).
if(DEFINED SHOAL_HAVE_TARGET_CLONES)
  return()
endif()
set(SHOAL_HAVE_TARGET_CLONES OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(s_dir ${CMAKE_BINARY_DIR}/CMakeFiles/shoal_target_clones)
  file(WRITE ${s_dir}/clone.c
       "__attribute__((target_clones(\"arch=x86-64-v3\", \"default\")))\n"
       "void s_scale(float *x, int n) { for (int i = 0; i < n; i++) x[i] *= 2.0f; }\n")
  file(WRITE ${s_dir}/main.c
       "void s_scale(float *x, int n);\n"
       "int main(void) { float x[8] = {1}; s_scale(x, 8); return x[0] == 2.0f ? 0 : 1; }\n")
  try_compile(s_ok ${s_dir}/build SOURCES ${s_dir}/clone.c ${s_dir}/main.c
              OUTPUT_VARIABLE s_log)
  set(SHOAL_HAVE_TARGET_CLONES ${s_ok})
endif()
set(SHOAL_HAVE_TARGET_CLONES ${SHOAL_HAVE_TARGET_CLONES} CACHE INTERNAL
    "the compiler links target_clones across files (kernels get an AVX2+FMA clone)")
message(STATUS "shoal: target_clones across files: ${SHOAL_HAVE_TARGET_CLONES}")
