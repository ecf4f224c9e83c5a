/* A fake NVML (libnvidia-ml) for fastprof's CPU-only sampler tests.
 *
 * Devices have scripted values (fake_nvml_set), entry points can be made unsupported
 * (fake_nvml_unsupported) or slow (fake_nvml_delay_us), nvmlInit_v2 can fail
 * (fake_nvml_fail_init) and a device can be lost after N utilisation reads
 * (fake_nvml_lose_after). Call counters let tests prove what the sampler reads.
 * GPM (the GPU performance counters): devices support it unless fake_nvml_set(dev, "gpm_supported", 0);
 * metrics return scripted values (fake_nvml_gpm_set), can be made unsupported one by one
 * (fake_nvml_gpm_unsupported) or report the window between the two samples in ms
 * (fake_nvml_gpm_elapsed); live sample buffers and non-consecutive sample pairs are counted.
 * Built with -DFAKE_NVML_NO_GPM the library has no GPM entry points at all (an older driver).
 * Load it through FASTPROF_NVML_LIBRARY; the tests drive fake_nvml_* through ctypes.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEV 8
#define MAX_NAMES 32

typedef struct {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
} proc_info_t;

typedef struct {
  unsigned int fieldId;
  unsigned int scopeId;
  long long timestamp;
  long long latencyUsec;
  int valueType;
  int nvmlReturn;
  union { double d; unsigned int ui; unsigned long long ull; } value;
} field_value_t;

typedef struct {
  int index;
  double util_gpu, util_mem, mem_total, mem_used, proc_mem, power_instant_mw, power_mw;
  double sm_clock, mem_clock, temperature, throttle, energy_mj;
  double gpm_supported;
  double other_procs;      /* compute processes listed besides this one (default 1) */
  double gpm_value[128];   /* scripted metric values by NVML_GPM_METRIC_* id (< 128) */
  int gpm_mode[128];       /* 0: scripted value, 1: NOT_SUPPORTED, 2: window length in ms */
  long gpm_seq;            /* samples taken on this device */
  long lose_after; /* utilisation reads before the device is lost; -1: never */
  long util_reads;
  int lost;
} fake_dev;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static fake_dev devs[MAX_DEV];
static int device_count = 1;
static int util_sequence = 0; /* 1: utilization.gpu reports the device's utilisation-read count */
static int init_error = 0;
static long init_calls = 0, shutdown_calls = 0;
static struct { char name[64]; int dev; } unsupported[MAX_NAMES];
static struct { char name[64]; long us; } delays[MAX_NAMES];
static struct { char name[64]; long count; } counters[64];

static void defaults(void) {
  for (int i = 0; i < MAX_DEV; ++i) {
    fake_dev* d = &devs[i];
    memset(d, 0, sizeof(*d));
    d->index = i;
    d->util_gpu = 40 + i; d->util_mem = 20 + i;
    d->mem_total = 80.0 * (1ULL << 30); d->mem_used = 1.0 * (1ULL << 30) * (i + 1);
    d->proc_mem = 512.0 * (1 << 20);
    d->other_procs = 1;
    d->power_instant_mw = 250000 + 1000 * i; d->power_mw = 240000 + 1000 * i;
    d->sm_clock = 1980; d->mem_clock = 2619; d->temperature = 45 + i; d->throttle = 4;
    d->energy_mj = 1000000.0 * (i + 1);
    d->lose_after = -1;
    d->gpm_supported = 1;
    for (int m = 0; m < 128; ++m) d->gpm_value[m] = m + 0.5 + i; /* metric id + 0.5 (+ device index) */
  }
}

static long gpm_live = 0, gpm_bad_pairs = 0, gpm_metrics_calls_n = 0, gpm_last_num_metrics = 0;

static int initialized_defaults = 0;
static void ensure(void) {
  if (!initialized_defaults) { defaults(); initialized_defaults = 1; }
}

/* Counts the call; sleeps if it is slow; returns 3 (NOT_SUPPORTED) / 15 (GPU_IS_LOST) / 0. */
static int enter(const char* name, fake_dev* d) {
  long us = 0;
  int code = 0;
  pthread_mutex_lock(&lock);
  ensure();
  int i;
  for (i = 0; i < 64; ++i) {
    if (counters[i].name[0] == 0) { strncpy(counters[i].name, name, 63); counters[i].count = 1; break; }
    if (strcmp(counters[i].name, name) == 0) { counters[i].count++; break; }
  }
  for (i = 0; i < MAX_NAMES; ++i) {
    if (delays[i].name[0] && strcmp(delays[i].name, name) == 0) us = delays[i].us;
    if (unsupported[i].name[0] && strcmp(unsupported[i].name, name) == 0 &&
        (unsupported[i].dev < 0 || (d && unsupported[i].dev == d->index)))
      code = 3;
  }
  if (d && d->lost) code = 15;
  pthread_mutex_unlock(&lock);
  if (us > 0) usleep((useconds_t)us);
  return code;
}

/* ---- control interface ---- */
void fake_nvml_reset(void) {
  pthread_mutex_lock(&lock);
  defaults();
  initialized_defaults = 1;
  device_count = 1;
  init_error = 0;
  init_calls = shutdown_calls = 0;
  util_sequence = 0;
  memset(unsupported, 0, sizeof(unsupported));
  memset(delays, 0, sizeof(delays));
  memset(counters, 0, sizeof(counters));
  gpm_bad_pairs = gpm_metrics_calls_n = gpm_last_num_metrics = 0;
  pthread_mutex_unlock(&lock);
}
/* GPM control: a metric's value, NOT_SUPPORTED, or the window between the samples in ms. */
void fake_nvml_gpm_set(int dev, int metric, double v) {
  ensure();
  pthread_mutex_lock(&lock);
  devs[dev].gpm_mode[metric] = 0; devs[dev].gpm_value[metric] = v;
  pthread_mutex_unlock(&lock);
}
void fake_nvml_gpm_unsupported(int dev, int metric) { ensure(); devs[dev].gpm_mode[metric] = 1; }
void fake_nvml_gpm_elapsed(int dev, int metric) { ensure(); devs[dev].gpm_mode[metric] = 2; }
long fake_nvml_gpm_live_samples(void) { return gpm_live; }
/* nvmlGpmMetricsGet calls whose two samples were not consecutive samples of one device. */
long fake_nvml_gpm_bad_pairs(void) { return gpm_bad_pairs; }
long fake_nvml_gpm_metrics_calls(void) { return gpm_metrics_calls_n; }
long fake_nvml_gpm_last_num_metrics(void) { return gpm_last_num_metrics; }
void fake_nvml_set_device_count(int n) { device_count = n; }
/* Sequence mode: every utilisation read returns the number of reads of that device so far (1, 2, ...),
   so a test can tell a lost or duplicated sample from the values alone. */
void fake_nvml_util_sequence(int on) { util_sequence = on; }
long fake_nvml_util_reads(int dev) { ensure(); pthread_mutex_lock(&lock); long n = devs[dev].util_reads; pthread_mutex_unlock(&lock); return n; }
void fake_nvml_fail_init(int code) { init_error = code; }
long fake_nvml_init_calls(void) { return init_calls; }
long fake_nvml_shutdown_calls(void) { return shutdown_calls; }
/* Makes `name` return NVML_ERROR_NOT_SUPPORTED on device `dev` (-1: every device). */
void fake_nvml_unsupported(const char* name, int dev) {
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAX_NAMES; ++i)
    if (!unsupported[i].name[0]) { strncpy(unsupported[i].name, name, 63); unsupported[i].dev = dev; break; }
  pthread_mutex_unlock(&lock);
}
void fake_nvml_delay_us(const char* name, long us) {
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAX_NAMES; ++i)
    if (!delays[i].name[0] || strcmp(delays[i].name, name) == 0) { strncpy(delays[i].name, name, 63); delays[i].us = us; break; }
  pthread_mutex_unlock(&lock);
}
void fake_nvml_lose_after(int dev, long n) { ensure(); devs[dev].lose_after = n; }
long fake_nvml_calls(const char* name) {
  long c = 0;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < 64; ++i) if (strcmp(counters[i].name, name) == 0) c = counters[i].count;
  pthread_mutex_unlock(&lock);
  return c;
}
/* Sets a value: util_gpu, util_mem, mem_total, mem_used, proc_mem, power_instant_mw, power_mw,
 * sm_clock, mem_clock, temperature, throttle, energy_mj, gpm_supported, other_procs (0 to 8). Returns -1 for
 * an unknown name. */
int fake_nvml_set(int dev, const char* what, double v) {
  ensure();
  fake_dev* d = &devs[dev];
  double* p = NULL;
  if (!strcmp(what, "util_gpu")) p = &d->util_gpu;
  else if (!strcmp(what, "util_mem")) p = &d->util_mem;
  else if (!strcmp(what, "mem_total")) p = &d->mem_total;
  else if (!strcmp(what, "mem_used")) p = &d->mem_used;
  else if (!strcmp(what, "proc_mem")) p = &d->proc_mem;
  else if (!strcmp(what, "power_instant_mw")) p = &d->power_instant_mw;
  else if (!strcmp(what, "power_mw")) p = &d->power_mw;
  else if (!strcmp(what, "sm_clock")) p = &d->sm_clock;
  else if (!strcmp(what, "mem_clock")) p = &d->mem_clock;
  else if (!strcmp(what, "temperature")) p = &d->temperature;
  else if (!strcmp(what, "throttle")) p = &d->throttle;
  else if (!strcmp(what, "energy_mj")) p = &d->energy_mj;
  else if (!strcmp(what, "gpm_supported")) p = &d->gpm_supported;
  else if (!strcmp(what, "other_procs")) p = &d->other_procs;
  if (!p) return -1;
  pthread_mutex_lock(&lock);
  *p = v;
  pthread_mutex_unlock(&lock);
  return 0;
}

/* ---- NVML ---- */
typedef fake_dev* nvmlDevice_t;

int nvmlInit_v2(void) {
  enter("nvmlInit_v2", NULL);
  init_calls++;
  return init_error;
}
int nvmlShutdown(void) { enter("nvmlShutdown", NULL); shutdown_calls++; return 0; }
const char* nvmlErrorString(int code) {
  switch (code) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 6: return "Not Found";
    case 9: return "Driver Not Loaded";
    case 15: return "GPU is lost";
    default: return "Unknown Error";
  }
}
int nvmlDeviceGetHandleByIndex_v2(unsigned idx, nvmlDevice_t* out) {
  enter("nvmlDeviceGetHandleByIndex_v2", NULL);
  if ((int)idx >= device_count) return 2;
  *out = &devs[idx];
  return 0;
}
int nvmlDeviceGetHandleByUUID(const char* uuid, nvmlDevice_t* out) {
  enter("nvmlDeviceGetHandleByUUID", NULL);
  for (int i = 0; i < device_count; ++i) {
    char buf[64];
    snprintf(buf, sizeof(buf), "GPU-fa4e0000-0000-0000-0000-00000000000%d", i);
    if (!strcmp(buf, uuid)) { *out = &devs[i]; return 0; }
  }
  return 6;
}
int nvmlDeviceGetHandleByPciBusId_v2(const char* bus, nvmlDevice_t* out) {
  enter("nvmlDeviceGetHandleByPciBusId_v2", NULL);
  for (int i = 0; i < device_count; ++i) {
    char buf[64];
    snprintf(buf, sizeof(buf), "00000000:%02X:00.0", 0x10 + i);
    if (!strcasecmp(buf, bus) || !strcasecmp(buf + 4, bus)) { *out = &devs[i]; return 0; }
  }
  return 6;
}
int nvmlDeviceGetName(nvmlDevice_t d, char* buf, unsigned len) {
  snprintf(buf, len, "Fake GPU %d", d->index);
  return 0;
}
int nvmlDeviceGetUUID(nvmlDevice_t d, char* buf, unsigned len) {
  snprintf(buf, len, "GPU-fa4e0000-0000-0000-0000-00000000000%d", d->index);
  return 0;
}
typedef struct { unsigned gpu, memory; } util_t;
int nvmlDeviceGetUtilizationRates(nvmlDevice_t d, util_t* u) {
  int rc = enter("nvmlDeviceGetUtilizationRates", d);
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  d->util_reads++;
  if (d->lose_after >= 0 && d->util_reads > d->lose_after) { d->lost = 1; rc = 15; }
  u->gpu = util_sequence ? (unsigned)d->util_reads : (unsigned)d->util_gpu;
  u->memory = (unsigned)d->util_mem;
  pthread_mutex_unlock(&lock);
  return rc;
}
typedef struct { unsigned long long total, free, used; } mem_t;
int nvmlDeviceGetMemoryInfo(nvmlDevice_t d, mem_t* m) {
  int rc = enter("nvmlDeviceGetMemoryInfo", d);
  if (rc) return rc;
  m->total = (unsigned long long)d->mem_total;
  m->used = (unsigned long long)d->mem_used;
  m->free = m->total - m->used;
  return 0;
}
int nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned* count, proc_info_t* infos) {
  int rc = enter("nvmlDeviceGetComputeRunningProcesses_v3", d);
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  unsigned others = (unsigned)d->other_procs;
  unsigned long long mine = (unsigned long long)d->proc_mem;
  pthread_mutex_unlock(&lock);
  if (others > 8) others = 8;
  unsigned n = others + 1;
  if (*count < n) { *count = n; return 7; }
  for (unsigned k = 0; k < others; ++k) {
    infos[k].pid = 1 + k; infos[k].usedGpuMemory = 12345; infos[k].gpuInstanceId = 0xFFFFFFFF;
    infos[k].computeInstanceId = 0xFFFFFFFF;
  }
  infos[others].pid = (unsigned)getpid(); infos[others].usedGpuMemory = mine;
  infos[others].gpuInstanceId = 0xFFFFFFFF; infos[others].computeInstanceId = 0xFFFFFFFF;
  *count = n;
  return 0;
}
int nvmlDeviceGetFieldValues(nvmlDevice_t d, int n, field_value_t* values) {
  int rc = enter("nvmlDeviceGetFieldValues", d);
  if (rc) return rc;
  for (int i = 0; i < n; ++i) {
    if (values[i].fieldId == 186) {
      values[i].valueType = 1;
      values[i].nvmlReturn = 0;
      values[i].value.ui = (unsigned)d->power_instant_mw;
    } else {
      values[i].nvmlReturn = 3;
    }
  }
  return 0;
}
int nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned* mw) {
  int rc = enter("nvmlDeviceGetPowerUsage", d);
  if (rc) return rc;
  *mw = (unsigned)d->power_mw;
  return 0;
}
int nvmlDeviceGetClockInfo(nvmlDevice_t d, unsigned type, unsigned* mhz) {
  int rc = enter(type == 1 ? "nvmlDeviceGetClockInfo:SM" : "nvmlDeviceGetClockInfo:MEM", d);
  if (!rc) rc = enter("nvmlDeviceGetClockInfo", d);
  if (rc) return rc;
  *mhz = (unsigned)(type == 1 ? d->sm_clock : d->mem_clock);
  return 0;
}
int nvmlDeviceGetTemperature(nvmlDevice_t d, unsigned sensor, unsigned* c) {
  int rc = enter("nvmlDeviceGetTemperature", d);
  if (rc) return rc;
  if (sensor != 0) return 2;
  *c = (unsigned)d->temperature;
  return 0;
}
int nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long* mask) {
  int rc = enter("nvmlDeviceGetCurrentClocksEventReasons", d);
  if (rc) return rc;
  *mask = (unsigned long long)d->throttle;
  return 0;
}
int nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long* mj) {
  int rc = enter("nvmlDeviceGetTotalEnergyConsumption", d);
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  d->energy_mj += 100.0; /* the counter advances by 100 mJ per read */
  *mj = (unsigned long long)d->energy_mj;
  pthread_mutex_unlock(&lock);
  return 0;
}

/* ---- GPM ---- */
#ifndef FAKE_NVML_NO_GPM
typedef struct { fake_dev* dev; long seq; struct timespec t; } gpm_sample;
typedef struct { unsigned version, isSupportedDevice; } gpm_support_t;
typedef struct {
  unsigned metricId;
  int nvmlReturn;
  double value;
  struct { char *shortName, *longName, *unit; } metricInfo;
} gpm_metric_t;
typedef struct {
  unsigned version, numMetrics;
  gpm_sample *sample1, *sample2;
  gpm_metric_t metrics[98]; /* NVML_GPM_METRIC_MAX of the first GPM release */
} gpm_metrics_get_t;

int nvmlGpmQueryDeviceSupport(nvmlDevice_t d, gpm_support_t* s) {
  int rc = enter("nvmlGpmQueryDeviceSupport", d);
  if (rc) return rc;
  if (!s || s->version != 1) return 25; /* NVML_ERROR_ARGUMENT_VERSION_MISMATCH */
  s->isSupportedDevice = d->gpm_supported != 0;
  return 0;
}
int nvmlGpmSampleAlloc(gpm_sample** out) {
  int rc = enter("nvmlGpmSampleAlloc", NULL);
  if (rc) return rc;
  *out = calloc(1, sizeof(gpm_sample));
  pthread_mutex_lock(&lock); gpm_live++; pthread_mutex_unlock(&lock);
  return 0;
}
int nvmlGpmSampleFree(gpm_sample* s) {
  enter("nvmlGpmSampleFree", NULL);
  if (!s) return 2;
  free(s);
  pthread_mutex_lock(&lock); gpm_live--; pthread_mutex_unlock(&lock);
  return 0;
}
int nvmlGpmSampleGet(nvmlDevice_t d, gpm_sample* s) {
  int rc = enter("nvmlGpmSampleGet", d);
  if (rc) return rc;
  if (!s) return 2;
  pthread_mutex_lock(&lock);
  s->dev = d;
  s->seq = ++d->gpm_seq;
  clock_gettime(CLOCK_MONOTONIC, &s->t);
  pthread_mutex_unlock(&lock);
  return 0;
}
int nvmlGpmMetricsGet(gpm_metrics_get_t* mg) {
  int rc = enter("nvmlGpmMetricsGet", mg && mg->sample2 ? mg->sample2->dev : NULL);
  if (rc) return rc;
  if (!mg || mg->version != 1) return 25;
  if (!mg->sample1 || !mg->sample2 || mg->numMetrics > 98 || !mg->sample1->dev ||
      mg->sample1->dev != mg->sample2->dev || mg->sample2->seq <= mg->sample1->seq)
    return 2; /* NVML_ERROR_INVALID_ARGUMENT */
  fake_dev* d = mg->sample2->dev;
  pthread_mutex_lock(&lock);
  gpm_metrics_calls_n++;
  gpm_last_num_metrics = mg->numMetrics;
  if (mg->sample2->seq != mg->sample1->seq + 1) gpm_bad_pairs++;
  double ms = (mg->sample2->t.tv_sec - mg->sample1->t.tv_sec) * 1e3 + (mg->sample2->t.tv_nsec - mg->sample1->t.tv_nsec) / 1e6;
  for (unsigned i = 0; i < mg->numMetrics; ++i) {
    unsigned id = mg->metrics[i].metricId;
    int mode = id < 128 ? d->gpm_mode[id] : 1;
    mg->metrics[i].nvmlReturn = mode == 1 ? 3 : 0;
    mg->metrics[i].value = mode == 0 ? d->gpm_value[id] : mode == 2 ? ms : 0.0;
  }
  pthread_mutex_unlock(&lock);
  return 0;
}
#endif
