// Only in the prebuilt addon (CMake option LOWRANK_PORTABLE, Linux x86-64): lowers the glibc it
// needs from the build host's to 2.18, so one binary loads on old and new distributions.
// Linking against a new glibc binds each call to the newest version of the function: pthread_*
// moved into libc in 2.34 (new versions), log/pow (2.29) and expf/logf/powf (2.27) got versions
// without the old error-handling wrapper, and libstdc++ reads __libc_single_threaded (2.32). Every
// call to one of these, ours and the statically linked libstdc++'s alike, is routed by the linker
// (--wrap=NAME, the list CMakeLists.txt reads from the LOWRANK_OLD lines below) to __wrap_NAME,
// which calls the version every x86-64 glibc has (GLIBC_2.2.5): the same function for the pthread
// calls, and the same results for the math ones.
#include <pthread.h>

#define LOWRANK_OLD(ret, name, params, args)                                             \
  extern "C" ret name##_glibc_2_2_5 params;                                              \
  __asm__(".symver " #name "_glibc_2_2_5, " #name "@GLIBC_2.2.5");                       \
  extern "C" __attribute__((visibility("hidden"))) ret __wrap_##name params { return name##_glibc_2_2_5 args; }

LOWRANK_OLD(int, pthread_create, (pthread_t* t, const pthread_attr_t* a, void* (*f)(void*), void* p), (t, a, f, p))
LOWRANK_OLD(int, pthread_join, (pthread_t t, void** r), (t, r))
LOWRANK_OLD(int, pthread_once, (pthread_once_t* o, void (*f)()), (o, f))
LOWRANK_OLD(int, __pthread_key_create, (pthread_key_t* k, void (*d)(void*)), (k, d))
LOWRANK_OLD(double, log, (double x), (x))
LOWRANK_OLD(double, pow, (double x, double y), (x, y))
LOWRANK_OLD(float, expf, (float x), (x))
LOWRANK_OLD(float, logf, (float x), (x))
LOWRANK_OLD(float, powf, (float x, float y), (x, y))

// libstdc++ skips atomic reference counts while this says the process has one thread; 0 ("maybe
// several") is always correct, and Node has several threads anyway.
extern "C" __attribute__((visibility("hidden"))) char __wrap___libc_single_threaded;
char __wrap___libc_single_threaded = 0;
