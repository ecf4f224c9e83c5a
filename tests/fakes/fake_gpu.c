/* A fake GPU driver for fastprof's CPU-only tests.
 *
 * It exports the CUDA driver API and HIP runtime entry points the recorder uses, with:
 *   - a device clock that is either CLOCK_MONOTONIC (default) or a scripted list of
 *     timestamps consumed one per event record (fake_gpu_script_timestamps);
 *   - scripted failures: the n-th next call of a named entry point returns a code
 *     (fake_gpu_fail);
 *   - call counters and a live-event count, so tests can prove what the hot path does;
 *   - kernel modules (cuModuleLoadData, cuModuleGetFunction, cuLaunchKernel, cuModuleUnload)
 *     that accept PTX text naming its entry points. A launch of a kernel whose first parameter
 *     is a u64 (fastprof's spin kernel) keeps the fake device busy for that many ns: the device
 *     works through a timeline, an event recorded behind the kernel takes the time the kernel
 *     ends (unless timestamps are scripted) and a synchronisation waits for it.
 *   - device memory (cuMemGetInfo_v2): 80 GiB total, 64 GiB free, changed by the tests with
 *     fake_gpu_set_free, fake_gpu_take (memory taken now, as a cudaMalloc would) and
 *     fake_gpu_script_free_drop (free memory drops by N bytes from the K-th next call on).
 *     Built with -DFAKE_GPU_NO_MODULES, the module entry points and cuMemGetInfo_v2 are left
 *     out (an older or partial driver).
 * Load it through FASTPROF_CUDA_LIBRARY / FASTPROF_HIP_LIBRARY; the tests drive the
 * control functions (fake_gpu_*) through ctypes on the same loaded copy.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SCRIPT 65536
#define MAX_FAILS 16
#define MAX_COUNTERS 64

typedef struct {
  int64_t timestamp;
  int recorded;
  int magic;
} fake_event;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int device_count = 1;
static int initialized = 0;
static int64_t script[MAX_SCRIPT];
static int script_len = 0, script_pos = 0;
static int live_events = 0;
static struct { char name[64]; int remaining; int code; } fails[MAX_FAILS];
static struct { char name[64]; long count; } counters[MAX_COUNTERS];
static int primary_ctx_token = 0x5eed;
static __thread void* current_ctx = NULL;
static __thread int current_hip_device = 0;
static int64_t busy_until = 0;     /* device timeline: when the last queued kernel ends */
static int live_modules = 0;
static uint64_t last_launch_ns = 0;
static long launches = 0;
#define FAKE_TOTAL_MEM (80LL << 30)
#define FAKE_FREE_MEM (64LL << 30)
static int64_t free_mem = FAKE_FREE_MEM;
static struct { long remaining; int64_t bytes; } drops[MAX_FAILS];

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Counts the call and returns a scripted failure code for it, or 0. */
static int enter(const char* name) {
  int code = 0;
  pthread_mutex_lock(&lock);
  int i;
  for (i = 0; i < MAX_COUNTERS; ++i) {
    if (counters[i].name[0] == 0) { strncpy(counters[i].name, name, 63); counters[i].count = 1; break; }
    if (strcmp(counters[i].name, name) == 0) { counters[i].count++; break; }
  }
  for (i = 0; i < MAX_FAILS; ++i) {
    if (fails[i].remaining > 0 && strcmp(fails[i].name, name) == 0) {
      if (--fails[i].remaining == 0) code = fails[i].code;
      break;
    }
  }
  pthread_mutex_unlock(&lock);
  return code;
}

/* ---- control interface for the tests ---- */
void fake_gpu_reset(void) {
  pthread_mutex_lock(&lock);
  memset(fails, 0, sizeof(fails));
  memset(counters, 0, sizeof(counters));
  script_len = script_pos = 0;
  device_count = 1;
  busy_until = 0;
  last_launch_ns = 0;
  launches = 0;
  free_mem = FAKE_FREE_MEM;
  memset(drops, 0, sizeof(drops));
  pthread_mutex_unlock(&lock);
}
void fake_gpu_set_device_count(int n) { device_count = n; }
/* The next `n` event records take these device timestamps (ns), in order; after them the
 * device clock falls back to CLOCK_MONOTONIC. */
void fake_gpu_script_timestamps(const int64_t* ts, int n) {
  pthread_mutex_lock(&lock);
  if (n > MAX_SCRIPT) n = MAX_SCRIPT;
  memcpy(script, ts, sizeof(int64_t) * (size_t)n);
  script_len = n;
  script_pos = 0;
  pthread_mutex_unlock(&lock);
}
/* The `nth` next call (1 = the very next) of entry point `name` returns `code`. */
void fake_gpu_fail(const char* name, int nth, int code) {
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAX_FAILS; ++i) {
    if (fails[i].remaining == 0) {
      strncpy(fails[i].name, name, 63);
      fails[i].remaining = nth;
      fails[i].code = code;
      break;
    }
  }
  pthread_mutex_unlock(&lock);
}
long fake_gpu_calls(const char* name) {
  long n = 0;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAX_COUNTERS && counters[i].name[0]; ++i)
    if (strcmp(counters[i].name, name) == 0) n = counters[i].count;
  pthread_mutex_unlock(&lock);
  return n;
}
/* Device memory: set the free bytes; take `bytes` now (negative: give back); from the `nth`
 * next cuMemGetInfo_v2 call on (1 = the very next), free memory is `bytes` lower. */
void fake_gpu_set_free(int64_t bytes) {
  pthread_mutex_lock(&lock);
  free_mem = bytes;
  pthread_mutex_unlock(&lock);
}
void fake_gpu_take(int64_t bytes) {
  pthread_mutex_lock(&lock);
  free_mem -= bytes;
  pthread_mutex_unlock(&lock);
}
void fake_gpu_script_free_drop(int64_t bytes, long nth) {
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAX_FAILS; ++i) {
    if (drops[i].remaining == 0) {
      drops[i].remaining = nth;
      drops[i].bytes = bytes;
      break;
    }
  }
  pthread_mutex_unlock(&lock);
}
int fake_gpu_live_events(void) { return live_events; }
int fake_gpu_live_modules(void) { return live_modules; }
/* The duration parameter of the last kernel launched, and the number of launches. */
uint64_t fake_gpu_last_launch_ns(void) { return last_launch_ns; }
long fake_gpu_launches(void) { return launches; }

/* ---- shared implementation ---- */
static int ev_create(void** out) {
  fake_event* e = (fake_event*)calloc(1, sizeof(fake_event));
  if (!e) return 2;
  e->magic = 0xE7E7;
  __atomic_add_fetch(&live_events, 1, __ATOMIC_RELAXED);
  *out = e;
  return 0;
}
static int ev_destroy(void* p) {
  fake_event* e = (fake_event*)p;
  if (!e || e->magic != 0xE7E7) return 400;
  e->magic = 0;
  free(e);
  __atomic_sub_fetch(&live_events, 1, __ATOMIC_RELAXED);
  return 0;
}
static int ev_record(void* p) {
  fake_event* e = (fake_event*)p;
  if (!e || e->magic != 0xE7E7) return 400;
  int64_t t;
  pthread_mutex_lock(&lock);
  if (script_pos < script_len) {
    t = script[script_pos++];
  } else {
    t = now_ns();
    if (busy_until > t) t = busy_until; /* reached once the queued kernels are done */
  }
  pthread_mutex_unlock(&lock);
  e->timestamp = t;
  e->recorded = 1;
  return 0;
}
static int ev_elapsed(float* ms, void* a, void* b) {
  fake_event* ea = (fake_event*)a;
  fake_event* eb = (fake_event*)b;
  if (!ea || !eb || ea->magic != 0xE7E7 || eb->magic != 0xE7E7) return 400;
  if (!ea->recorded || !eb->recorded) return 400;
  *ms = (float)((double)(eb->timestamp - ea->timestamp) / 1e6);
  return 0;
}

/* Waits until the device timeline has caught up with the host clock. */
static void wait_idle(void) {
  int64_t until;
  pthread_mutex_lock(&lock);
  until = busy_until;
  pthread_mutex_unlock(&lock);
  for (;;) {
    int64_t left = until - now_ns();
    if (left <= 0) break;
    struct timespec ts = {(time_t)(left / 1000000000LL), (long)(left % 1000000000LL)};
    nanosleep(&ts, NULL);
  }
}

static const char* error_name(int code) {
  switch (code) {
    case 0: return "CUDA_SUCCESS";
    case 1: return "CUDA_ERROR_INVALID_VALUE";
    case 2: return "CUDA_ERROR_OUT_OF_MEMORY";
    case 3: return "CUDA_ERROR_NOT_INITIALIZED";
    case 100: return "CUDA_ERROR_NO_DEVICE";
    case 101: return "CUDA_ERROR_INVALID_DEVICE";
    case 201: return "CUDA_ERROR_INVALID_CONTEXT";
    case 218: return "CUDA_ERROR_INVALID_PTX";
    case 222: return "CUDA_ERROR_UNSUPPORTED_PTX_VERSION";
    case 400: return "CUDA_ERROR_INVALID_HANDLE";
    case 500: return "CUDA_ERROR_NOT_FOUND";
    case 600: return "CUDA_ERROR_NOT_READY";
    case 700: return "CUDA_ERROR_ILLEGAL_ADDRESS";
    case 999: return "CUDA_ERROR_UNKNOWN";
    default: return NULL;
  }
}
static const char* error_string(int code) {
  switch (code) {
    case 0: return "no error";
    case 1: return "invalid argument";
    case 2: return "out of memory";
    case 3: return "initialization error";
    case 100: return "no CUDA-capable device is detected";
    case 101: return "invalid device ordinal";
    case 201: return "invalid device context";
    case 218: return "a PTX JIT compilation failed";
    case 222: return "the provided PTX was compiled with an unsupported toolchain.";
    case 400: return "invalid resource handle";
    case 500: return "named symbol not found";
    case 600: return "device not ready";
    case 700: return "an illegal memory access was encountered";
    case 999: return "unknown error";
    default: return NULL;
  }
}

/* ---- CUDA driver API ---- */
int cuInit(unsigned flags) {
  (void)flags;
  int rc = enter("cuInit");
  if (rc) return rc;
  initialized = 1;
  return 0;
}
int cuGetErrorName(int code, const char** s) {
  *s = error_name(code);
  return *s ? 0 : 1;
}
int cuGetErrorString(int code, const char** s) {
  *s = error_string(code);
  return *s ? 0 : 1;
}
int cuDriverGetVersion(int* v) {
  int rc = enter("cuDriverGetVersion");
  if (rc) return rc;
  *v = 13000;
  return 0;
}
int cuDeviceGet(int* dev, int ordinal) {
  int rc = enter("cuDeviceGet");
  if (rc) return rc;
  if (!initialized) return 3;
  if (ordinal < 0 || ordinal >= device_count) return 101;
  *dev = ordinal;
  return 0;
}
int cuDeviceGetName(char* name, int len, int dev) {
  int rc = enter("cuDeviceGetName");
  if (rc) return rc;
  if (dev < 0 || dev >= device_count) return 101;
  strncpy(name, "Fake GPU", (size_t)len);
  return 0;
}
int cuDevicePrimaryCtxRetain(void** ctx, int dev) {
  int rc = enter("cuDevicePrimaryCtxRetain");
  if (rc) return rc;
  if (dev < 0 || dev >= device_count) return 101;
  *ctx = (char*)&primary_ctx_token + dev;
  return 0;
}
int cuDevicePrimaryCtxRelease_v2(int dev) {
  (void)dev;
  return enter("cuDevicePrimaryCtxRelease");
}
int cuCtxGetCurrent(void** ctx) {
  int rc = enter("cuCtxGetCurrent");
  if (rc) return rc;
  *ctx = current_ctx;
  return 0;
}
int cuCtxSetCurrent(void* ctx) {
  int rc = enter("cuCtxSetCurrent");
  if (rc) return rc;
  current_ctx = ctx;
  return 0;
}
int cuCtxSynchronize(void) {
  int rc = enter("cuCtxSynchronize");
  if (rc) return rc;
  if (!current_ctx) return 201;
  wait_idle();
  return 0;
}
#ifndef FAKE_GPU_NO_MODULES
int cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
  int rc = enter("cuMemGetInfo_v2");
  if (rc) return rc;
  if (!current_ctx) return 201;
  if (!free_bytes || !total_bytes) return 1;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAX_FAILS; ++i) {
    if (drops[i].remaining > 0 && --drops[i].remaining == 0) free_mem -= drops[i].bytes;
  }
  *free_bytes = (size_t)(free_mem < 0 ? 0 : free_mem);
  *total_bytes = (size_t)FAKE_TOTAL_MEM;
  pthread_mutex_unlock(&lock);
  return 0;
}
#endif
int cuEventCreate(void** e, unsigned flags) {
  (void)flags;
  int rc = enter("cuEventCreate");
  if (rc) return rc;
  if (!current_ctx) return 201;
  return ev_create(e);
}
int cuEventDestroy_v2(void* e) {
  int rc = enter("cuEventDestroy");
  if (rc) return rc;
  return ev_destroy(e);
}
int cuEventRecord(void* e, void* stream) {
  (void)stream;
  int rc = enter("cuEventRecord");
  if (rc) return rc;
  return ev_record(e);
}
int cuEventSynchronize(void* e) {
  (void)e;
  int rc = enter("cuEventSynchronize");
  if (rc) return rc;
  wait_idle();
  return 0;
}
/* Only the pre-12.8 name is exported, so the loader's fallback is exercised. */
int cuEventElapsedTime(float* ms, void* a, void* b) {
  int rc = enter("cuEventElapsedTime");
  if (rc) return rc;
  return ev_elapsed(ms, a, b);
}

#ifndef FAKE_GPU_NO_MODULES
/* ---- kernel modules ---- */
typedef struct {
  int magic;
  char* image;
} fake_module;
typedef struct {
  int magic;
  fake_module* module;
  char name[128];
} fake_function;

/* PTX text: must declare .version, .target and at least one .entry. */
int cuModuleLoadData(void** module, const void* image) {
  int rc = enter("cuModuleLoadData");
  if (rc) return rc;
  if (!current_ctx) return 201;
  if (!module || !image) return 1;
  const char* text = (const char*)image;
  if (!strstr(text, ".version") || !strstr(text, ".target") || !strstr(text, ".entry")) return 218;
  fake_module* m = (fake_module*)calloc(1, sizeof(fake_module));
  if (!m) return 2;
  m->magic = 0x30D;
  m->image = strdup(text);
  __atomic_add_fetch(&live_modules, 1, __ATOMIC_RELAXED);
  *module = m;
  return 0;
}
int cuModuleGetFunction(void** fn, void* module, const char* name) {
  int rc = enter("cuModuleGetFunction");
  if (rc) return rc;
  fake_module* m = (fake_module*)module;
  if (!m || m->magic != 0x30D) return 400;
  if (!fn || !name || strlen(name) >= 100) return 1;
  char pattern[128];
  snprintf(pattern, sizeof(pattern), ".entry %s(", name);
  if (!strstr(m->image, pattern)) return 500;
  fake_function* f = (fake_function*)calloc(1, sizeof(fake_function));
  if (!f) return 2;
  f->magic = 0xF00;
  f->module = m;
  strncpy(f->name, name, sizeof(f->name) - 1);
  *fn = f;
  return 0;
}
int cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned shared_bytes, void* stream, void** params, void** extra) {
  (void)shared_bytes;
  (void)stream;
  (void)extra;
  int rc = enter("cuLaunchKernel");
  if (rc) return rc;
  if (!current_ctx) return 201;
  fake_function* f = (fake_function*)fn;
  if (!f || f->magic != 0xF00 || !f->module || f->module->magic != 0x30D) return 400;
  if (!gx || !gy || !gz || !bx || !by || !bz) return 1;
  if (!params || !params[0]) return 1;
  uint64_t duration = *(const uint64_t*)params[0];
  pthread_mutex_lock(&lock);
  int64_t start = now_ns();
  if (busy_until > start) start = busy_until;
  busy_until = start + (int64_t)duration;
  last_launch_ns = duration;
  launches++;
  pthread_mutex_unlock(&lock);
  return 0;
}
/* Functions of an unloaded module become invalid handles (their memory is leaked on purpose,
 * so a stale handle is detected rather than read after free). */
int cuModuleUnload(void* module) {
  int rc = enter("cuModuleUnload");
  if (rc) return rc;
  fake_module* m = (fake_module*)module;
  if (!m || m->magic != 0x30D) return 400;
  m->magic = 0;
  free(m->image);
  m->image = NULL;
  __atomic_sub_fetch(&live_modules, 1, __ATOMIC_RELAXED);
  return 0;
}
#endif

/* ---- HIP runtime ---- */
const char* hipGetErrorName(int code) {
  const char* s = error_name(code);
  return s ? s : "hipErrorUnknown";
}
const char* hipGetErrorString(int code) {
  const char* s = error_string(code);
  return s ? s : "unknown error";
}
int hipDriverGetVersion(int* v) {
  int rc = enter("hipDriverGetVersion");
  if (rc) return rc;
  *v = 60443483;
  return 0;
}
int hipSetDevice(int d) {
  int rc = enter("hipSetDevice");
  if (rc) return rc;
  if (d < 0 || d >= device_count) return 101;
  current_hip_device = d;
  return 0;
}
int hipGetDevice(int* d) {
  int rc = enter("hipGetDevice");
  if (rc) return rc;
  *d = current_hip_device;
  return 0;
}
int hipDeviceGetName(char* name, int len, int dev) {
  int rc = enter("hipDeviceGetName");
  if (rc) return rc;
  if (dev < 0 || dev >= device_count) return 101;
  strncpy(name, "Fake GPU", (size_t)len);
  return 0;
}
int hipDeviceSynchronize(void) { return enter("hipDeviceSynchronize"); }
int hipEventCreateWithFlags(void** e, unsigned flags) {
  (void)flags;
  int rc = enter("hipEventCreateWithFlags");
  if (rc) return rc;
  return ev_create(e);
}
int hipEventDestroy(void* e) {
  int rc = enter("hipEventDestroy");
  if (rc) return rc;
  return ev_destroy(e);
}
int hipEventRecord(void* e, void* stream) {
  (void)stream;
  int rc = enter("hipEventRecord");
  if (rc) return rc;
  return ev_record(e);
}
int hipEventSynchronize(void* e) {
  (void)e;
  return enter("hipEventSynchronize");
}
int hipEventElapsedTime(float* ms, void* a, void* b) {
  int rc = enter("hipEventElapsedTime");
  if (rc) return rc;
  return ev_elapsed(ms, a, b);
}
