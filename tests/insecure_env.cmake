# insecure_env.cmake: read by ctest (TEST_INCLUDE_FILES of tests/) before it runs any test.
# The daemons and shoalctl refuse plaintext TCP without --insecure (ops/SECURITY.md); the tests
# written before CURVE start them over loopback TCP, so every test runs with SHOAL_INSECURE=1,
# the environment form of --insecure. CURVE tests give keys, which win over it (test_coord_curve,
# curve_cluster.sh, test_comm_curve; shoalctl up always makes keys).
set(ENV{SHOAL_INSECURE} 1)
