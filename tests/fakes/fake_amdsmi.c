/* A fake AMD SMI (libamd_smi) for fastprof's CPU-only sampler tests: two GPUs on one socket
 * with fixed readings, entry points that can be made unsupported (fake_amdsmi_unsupported)
 * and call counters (fake_amdsmi_calls). Struct layouts follow amdsmi.h (6.2 and later).
 * Load it through FASTPROF_AMDSMI_LIBRARY. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <string.h>

typedef struct { uint32_t gfx_activity, umc_activity, mm_activity, reserved[13]; } engine_usage_t;
typedef struct {
  uint64_t socket_power;
  uint32_t current_socket_power, average_socket_power;
  uint64_t gfx_voltage, soc_voltage, mem_voltage;
  uint32_t power_limit;
  uint64_t reserved[18];
} power_info_t;
typedef struct { uint32_t clk, min_clk, max_clk; uint8_t clk_locked, clk_deep_sleep; uint32_t reserved[4]; } clk_info_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char unsupported[16][64];
static struct { char name[64]; long count; } counters[32];
static int gpus[2] = {0, 1};
static int socket_token = 7;
static long init_calls = 0, shutdown_calls = 0;
static uint64_t energy[2] = {1000000, 2000000};

static int enter(const char* name) {
  int code = 0;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < 32; ++i) {
    if (!counters[i].name[0]) { strncpy(counters[i].name, name, 63); counters[i].count = 1; break; }
    if (!strcmp(counters[i].name, name)) { counters[i].count++; break; }
  }
  for (int i = 0; i < 16; ++i) if (unsupported[i][0] && !strcmp(unsupported[i], name)) code = 2;
  pthread_mutex_unlock(&lock);
  return code;
}

void fake_amdsmi_reset(void) {
  pthread_mutex_lock(&lock);
  memset(unsupported, 0, sizeof(unsupported));
  memset(counters, 0, sizeof(counters));
  init_calls = shutdown_calls = 0;
  pthread_mutex_unlock(&lock);
}
void fake_amdsmi_unsupported(const char* name) {
  pthread_mutex_lock(&lock);
  for (int i = 0; i < 16; ++i) if (!unsupported[i][0]) { strncpy(unsupported[i], name, 63); break; }
  pthread_mutex_unlock(&lock);
}
long fake_amdsmi_calls(const char* name) {
  long c = 0;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < 32; ++i) if (!strcmp(counters[i].name, name)) c = counters[i].count;
  pthread_mutex_unlock(&lock);
  return c;
}
long fake_amdsmi_init_calls(void) { return init_calls; }
long fake_amdsmi_shutdown_calls(void) { return shutdown_calls; }

static int gpu_of(void* h) { return h == &gpus[1] ? 1 : 0; }

unsigned amdsmi_init(uint64_t flags) { enter("amdsmi_init"); init_calls++; return (flags & 2) ? 0 : 1; }
unsigned amdsmi_shut_down(void) { enter("amdsmi_shut_down"); shutdown_calls++; return 0; }
unsigned amdsmi_status_code_to_string(unsigned status, const char** s) {
  *s = status == 2 ? "AMDSMI_STATUS_NOT_SUPPORTED: Command not supported" : "AMDSMI_STATUS_FAIL";
  return 0;
}
unsigned amdsmi_get_socket_handles(uint32_t* count, void** sockets) {
  if (!sockets) { *count = 1; return 0; }
  if (*count < 1) return 1;
  sockets[0] = &socket_token;
  *count = 1;
  return 0;
}
unsigned amdsmi_get_processor_handles(void* socket, uint32_t* count, void** handles) {
  if (socket != &socket_token) return 1;
  if (!handles) { *count = 2; return 0; }
  if (*count < 2) return 1;
  handles[0] = &gpus[0];
  handles[1] = &gpus[1];
  *count = 2;
  return 0;
}
unsigned amdsmi_get_gpu_activity(void* h, engine_usage_t* u) {
  int rc = enter("amdsmi_get_gpu_activity");
  if (rc) return rc;
  memset(u, 0, sizeof(*u));
  u->gfx_activity = 70 + gpu_of(h);
  u->umc_activity = 30 + gpu_of(h);
  u->mm_activity = 0;
  return 0;
}
unsigned amdsmi_get_gpu_memory_usage(void* h, unsigned type, uint64_t* used) {
  int rc = enter("amdsmi_get_gpu_memory_usage");
  if (rc) return rc;
  if (type != 0) return 1;
  *used = (uint64_t)(gpu_of(h) + 1) << 30;
  return 0;
}
unsigned amdsmi_get_gpu_memory_total(void* h, unsigned type, uint64_t* total) {
  int rc = enter("amdsmi_get_gpu_memory_total");
  (void)h;
  if (rc) return rc;
  if (type != 0) return 1;
  *total = 192ULL << 30;
  return 0;
}
unsigned amdsmi_get_power_info(void* h, power_info_t* p) {
  int rc = enter("amdsmi_get_power_info");
  if (rc) return rc;
  memset(p, 0, sizeof(*p));
  p->socket_power = 500 + gpu_of(h);
  p->current_socket_power = 500 + gpu_of(h);
  p->average_socket_power = 0xFFFFFFFFu; /* unsupported on MI300-class parts */
  p->power_limit = 750;
  return 0;
}
unsigned amdsmi_get_clock_info(void* h, unsigned type, clk_info_t* c) {
  int rc = enter("amdsmi_get_clock_info");
  (void)h;
  if (rc) return rc;
  memset(c, 0, sizeof(*c));
  c->clk = type == 0 ? 2100 : (type == 4 ? 1300 : 0);
  return 0;
}
unsigned amdsmi_get_temp_metric(void* h, unsigned sensor, unsigned metric, int64_t* t) {
  int rc = enter("amdsmi_get_temp_metric");
  if (rc) return rc;
  if (metric != 0) return 2;
  if (sensor == 0) return 2; /* no edge sensor, like MI300 */
  *t = 55 + gpu_of(h);
  return 0;
}
unsigned amdsmi_get_energy_count(void* h, uint64_t* acc, float* resolution, uint64_t* ts) {
  int rc = enter("amdsmi_get_energy_count");
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  energy[gpu_of(h)] += 1000;
  *acc = energy[gpu_of(h)];
  pthread_mutex_unlock(&lock);
  *resolution = 15.3f; /* uJ per count */
  *ts = 0;
  return 0;
}
