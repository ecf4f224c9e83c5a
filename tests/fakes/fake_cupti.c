/* A fake CUPTI activity library for CPU-only tests of fastprof's kernel tracer.
 *
 * Tests script records (kernel, graph kernel, memcpy, memset) with fake_cupti_add() and CUDA API
 * calls with fake_cupti_add_api() (domain 1 driver -> kind 4, 2 runtime -> kind 5); they are
 * written in CUPTI's record layouts (CUpti_ActivityKernel10, Memcpy6, Memset4, API) into buffers
 * obtained from the tracer's buffer-request callback and delivered through its buffer-completed
 * callback when the tracer calls cuptiActivityFlushAll. Scripted drops, errors and "another
 * subscriber" come from control functions (ctypes) or from the environment. cuptiGetCallbackName
 * answers from a table (a few real names by default; fake_cupti_set_callback_name adds or, with
 * NULL, removes one: the call then fails with CUPTI_ERROR_INVALID_PARAMETER):
 *   FAKE_CUPTI_OTHER_SUBSCRIBER=1      cuptiSubscribe answers CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED
 *   FAKE_CUPTI_FAIL=<function>:<code>  that entry point returns <code>
 *   FAKE_CUPTI_DROPPED=<n>             cuptiActivityGetNumDroppedRecords reports n (once)
 * cuptiActivityEnableRuntimeApi / DriverApi switch single functions off and on again (on by
 * default, as in CUPTI): an API call scripted while its function is switched off is not recorded
 * (fake_cupti_api_enabled tells which are on; FAKE_CUPTI_FAIL=cuptiActivityEnableRuntimeApi:1 makes
 * a tracer keep every function).
 * Built with -DFAKE_CUPTI_NO_TS_CALLBACK it lacks cuptiActivityRegisterTimestampCallback: records
 * are then stamped on a clock offset from CLOCK_MONOTONIC (fake_cupti_set_clock_offset). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void (*request_fn)(uint8_t**, size_t*, size_t*);
typedef void (*complete_fn)(void*, uint32_t, uint8_t*, size_t, size_t);
typedef uint64_t (*timestamp_fn)(void);

#define MAX_RECORDS 4096
#define MAX_CALLS 32

typedef struct {
  int kind; /* 10 concurrent kernel, 1 memcpy, 2 memset, 4 driver API, 5 runtime API */
  char* name;
  uint64_t start, end, bytes;
  uint32_t device, stream, correlation, graph_id;
  uint32_t cbid, thread; /* API records */
  uint8_t copy_kind;
} script_t;

#define MAX_CB_NAMES 64
typedef struct { int domain; uint32_t cbid; char name[96]; } cb_name_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static script_t script[MAX_RECORDS];
static int n_script = 0;
static request_fn on_request = 0;
static complete_fn on_complete = 0;
static timestamp_fn ts_callback = 0;
static int subscribed = 0, other_subscriber = 0;
static int enabled[64], ever_enabled[64]; /* records of kinds never enabled are not delivered */
#define MAX_CBID 4096
static unsigned char api_off[3][MAX_CBID]; /* functions switched off, by domain */
static size_t scripted_dropped = 0, pool_dropped = 0;
static int64_t clock_offset = 1000000000000LL;
static int hold_buffers = 0;
static int only_enabled = 0; /* records scripted while their kind is disabled are lost, as on a GPU */
static struct { char name[64]; int code; long calls; } calls[MAX_CALLS];
static int n_calls = 0;
static cb_name_t cb_names[MAX_CB_NAMES];
static int n_cb_names = 0, cb_names_set = 0;

/* The callback ids of cupti_runtime_cbid.h / cupti_driver_cbid.h. */
static const cb_name_t default_cb_names[] = {
    {2, 211, "cudaLaunchKernel_v7000"},      {2, 311, "cudaGraphLaunch_v10000"},
    {2, 131, "cudaStreamSynchronize_v3020"}, {2, 41, "cudaMemcpyAsync_v3020"},
    {2, 165, "cudaDeviceSynchronize_v3020"}, {1, 307, "cuLaunchKernel"},
    {1, 17, "cuCtxSynchronize"},             {2, 10, "cudaGetDevice_v3020"},
};

static void default_callback_names(void) {
  n_cb_names = (int)(sizeof default_cb_names / sizeof default_cb_names[0]);
  memcpy(cb_names, default_cb_names, sizeof default_cb_names);
  cb_names_set = 1;
}

static int64_t mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int entry(const char* name) { /* counts the call; returns its scripted error code or 0 */
  int i;
  for (i = 0; i < n_calls; ++i)
    if (!strcmp(calls[i].name, name)) break;
  if (i == n_calls) {
    if (n_calls == MAX_CALLS) return 0;
    strncpy(calls[n_calls].name, name, 63);
    calls[n_calls].code = 0;
    calls[n_calls].calls = 0;
    ++n_calls;
  }
  calls[i].calls++;
  const char* env = getenv("FAKE_CUPTI_FAIL");
  size_t len = strlen(name);
  if (env && !strncmp(env, name, len) && env[len] == ':') return atoi(env + len + 1);
  return calls[i].code;
}

void fake_cupti_reset(void) {
  pthread_mutex_lock(&mu);
  for (int i = 0; i < n_script; ++i) free(script[i].name);
  n_script = 0;
  n_calls = 0;
  subscribed = other_subscriber = 0;
  memset(enabled, 0, sizeof enabled);
  memset(ever_enabled, 0, sizeof ever_enabled);
  memset(api_off, 0, sizeof api_off);
  scripted_dropped = pool_dropped = 0;
  clock_offset = 1000000000000LL;
  hold_buffers = 0;
  only_enabled = 0;
  default_callback_names();
  pthread_mutex_unlock(&mu);
}

void fake_cupti_add(int kind, const char* name, uint64_t start, uint64_t end, uint32_t device, uint32_t stream,
                    uint32_t correlation, uint32_t graph_id, uint64_t bytes, int copy_kind) {
  pthread_mutex_lock(&mu);
  if (only_enabled && !(kind >= 0 && kind < 64 && enabled[kind])) {
    pthread_mutex_unlock(&mu);
    return;
  }
  if (n_script < MAX_RECORDS) {
    script_t* s = &script[n_script++];
    s->kind = kind;
    s->name = name ? strdup(name) : 0;
    s->start = start;
    s->end = end;
    s->device = device;
    s->stream = stream;
    s->correlation = correlation;
    s->graph_id = graph_id;
    s->bytes = bytes;
    s->copy_kind = (uint8_t)copy_kind;
  }
  pthread_mutex_unlock(&mu);
}

/* A CUDA API call: domain 1 driver API (activity kind 4), 2 runtime API (kind 5). */
void fake_cupti_add_api(int domain, uint32_t cbid, uint64_t start, uint64_t end, uint32_t thread,
                        uint32_t correlation) {
  int kind = domain == 1 ? 4 : 5;
  pthread_mutex_lock(&mu);
  int off = cbid < MAX_CBID && api_off[domain == 1 ? 1 : 2][cbid];
  if ((only_enabled && !enabled[kind]) || off || n_script >= MAX_RECORDS) {
    pthread_mutex_unlock(&mu);
    return;
  }
  script_t* s = &script[n_script++];
  memset(s, 0, sizeof *s);
  s->kind = kind;
  s->start = start;
  s->end = end;
  s->cbid = cbid;
  s->thread = thread;
  s->correlation = correlation;
  pthread_mutex_unlock(&mu);
}

/* Sets the name cuptiGetCallbackName gives (domain, cbid); NULL removes it. */
void fake_cupti_set_callback_name(int domain, uint32_t cbid, const char* name) {
  pthread_mutex_lock(&mu);
  if (!cb_names_set) default_callback_names();
  int i;
  for (i = 0; i < n_cb_names; ++i)
    if (cb_names[i].domain == domain && cb_names[i].cbid == cbid) break;
  if (!name) {
    if (i < n_cb_names) cb_names[i] = cb_names[--n_cb_names];
  } else if (i < n_cb_names || n_cb_names < MAX_CB_NAMES) {
    if (i == n_cb_names) ++n_cb_names;
    cb_names[i].domain = domain;
    cb_names[i].cbid = cbid;
    strncpy(cb_names[i].name, name, sizeof cb_names[i].name - 1);
    cb_names[i].name[sizeof cb_names[i].name - 1] = 0;
  }
  pthread_mutex_unlock(&mu);
}

void fake_cupti_set_dropped(long n) { scripted_dropped = (size_t)n; }
void fake_cupti_other_subscriber(int on) { other_subscriber = on; }
void fake_cupti_set_clock_offset(int64_t ns) { clock_offset = ns; }
/* On: every buffer a flush needs is requested before any is completed (pool exhaustion). */
void fake_cupti_hold_buffers(int on) { hold_buffers = on; }
/* On: fake_cupti_add drops records of kinds not enabled now (activity outside a trace). */
void fake_cupti_only_enabled(int on) { only_enabled = on; }
int fake_cupti_enabled(int kind) { return kind >= 0 && kind < 64 ? enabled[kind] : 0; }
int fake_cupti_api_enabled(int domain, uint32_t cbid) {
  return domain >= 1 && domain <= 2 && cbid < MAX_CBID ? !api_off[domain][cbid] : 0;
}
int fake_cupti_subscribed(void) { return subscribed; }
int fake_cupti_has_ts_callback(void) { return ts_callback != 0; }

void fake_cupti_fail(const char* name, int code) {
  entry(name);
  for (int i = 0; i < n_calls; ++i)
    if (!strcmp(calls[i].name, name)) {
      calls[i].code = code;
      calls[i].calls--;
    }
}

long fake_cupti_calls(const char* name) {
  for (int i = 0; i < n_calls; ++i)
    if (!strcmp(calls[i].name, name)) return calls[i].calls;
  return 0;
}

/* ---- CUPTI entry points ---- */
int cuptiGetResultString(int result, const char** str) {
  switch (result) {
    case 0: *str = "CUPTI_SUCCESS"; break;
    case 35: *str = "CUPTI_ERROR_INSUFFICIENT_PRIVILEGES"; break;
    case 39: *str = "CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED"; break;
    default: *str = "CUPTI_ERROR_UNKNOWN"; break;
  }
  return 0;
}

/* Called from the tracer's buffer callback, inside cuptiActivityFlushAll (which holds mu): the
 * table is read without taking the lock again. */
int cuptiGetCallbackName(int domain, uint32_t cbid, const char** name) {
  int rc = entry("cuptiGetCallbackName");
  if (rc) return rc;
  if (!name) return 1; /* CUPTI_ERROR_INVALID_PARAMETER */
  if (!cb_names_set) default_callback_names();
  for (int i = 0; i < n_cb_names; ++i)
    if (cb_names[i].domain == domain && cb_names[i].cbid == cbid) {
      *name = cb_names[i].name;
      return 0;
    }
  return 1;
}

int cuptiSubscribe(void** subscriber, void* callback, void* userdata) {
  (void)callback;
  (void)userdata;
  int rc = entry("cuptiSubscribe");
  if (rc) return rc;
  const char* env = getenv("FAKE_CUPTI_OTHER_SUBSCRIBER");
  if (subscribed || other_subscriber || (env && *env == '1')) return 39;
  subscribed = 1;
  *subscriber = (void*)&subscribed;
  return 0;
}

int cuptiUnsubscribe(void* subscriber) {
  (void)subscriber;
  int rc = entry("cuptiUnsubscribe");
  if (rc) return rc;
  subscribed = 0;
  return 0;
}

int cuptiActivityRegisterCallbacks(request_fn req, complete_fn done) {
  int rc = entry("cuptiActivityRegisterCallbacks");
  if (rc) return rc;
  on_request = req;
  on_complete = done;
  return 0;
}

#ifndef FAKE_CUPTI_NO_TS_CALLBACK
int cuptiActivityRegisterTimestampCallback(timestamp_fn fn) {
  int rc = entry("cuptiActivityRegisterTimestampCallback");
  if (rc) return rc;
  ts_callback = fn;
  return 0;
}
#endif

int cuptiGetTimestamp(uint64_t* ts) {
  int rc = entry("cuptiGetTimestamp");
  if (rc) return rc;
  *ts = (uint64_t)(mono() + clock_offset);
  return 0;
}

int cuptiActivityEnable(int kind) {
  int rc = entry("cuptiActivityEnable");
  if (rc) return rc;
  if (kind >= 0 && kind < 64) enabled[kind] = ever_enabled[kind] = 1;
  return 0;
}

static int enable_api(const char* fn, int domain, uint32_t cbid, uint8_t on) {
  int rc = entry(fn);
  if (rc) return rc;
  if (cbid >= MAX_CBID) return 1; /* CUPTI_ERROR_INVALID_PARAMETER */
  api_off[domain][cbid] = on ? 0 : 1;
  return 0;
}

int cuptiActivityEnableRuntimeApi(uint32_t cbid, uint8_t on) { return enable_api("cuptiActivityEnableRuntimeApi", 2, cbid, on); }
int cuptiActivityEnableDriverApi(uint32_t cbid, uint8_t on) { return enable_api("cuptiActivityEnableDriverApi", 1, cbid, on); }

int cuptiActivityDisable(int kind) {
  int rc = entry("cuptiActivityDisable");
  if (rc) return rc;
  if (kind >= 0 && kind < 64) enabled[kind] = 0;
  return 0;
}

static size_t record_size(int kind) { return kind == 1 ? 96 : kind == 2 ? 88 : kind == 4 || kind == 5 ? 40 : 216; }

static void put32(uint8_t* p, size_t off, uint32_t v) { memcpy(p + off, &v, 4); }
static void put64(uint8_t* p, size_t off, uint64_t v) { memcpy(p + off, &v, 8); }

static void write_record(uint8_t* p, const script_t* s) {
  /* With a timestamp callback the scripted times are on its clock; without, on CUPTI's own. */
  uint64_t shift = ts_callback ? 0 : (uint64_t)clock_offset;
  memset(p, 0xAB, record_size(s->kind)); /* fields fastprof must not read stay garbage */
  put32(p, 0, (uint32_t)s->kind);
  if (s->kind == 10 || s->kind == 3) {
    put64(p, 16, s->start + shift);
    put64(p, 24, s->end + shift);
    put32(p, 40, s->device);
    put32(p, 48, s->stream);
    put32(p, 92, s->correlation);
    const char* name = s->name;
    memcpy(p + 104, &name, sizeof name);
    put32(p, 156, s->graph_id);
  } else if (s->kind == 4 || s->kind == 5) { /* CUpti_ActivityAPI */
    put32(p, 4, s->cbid);
    put64(p, 8, s->start + shift);
    put64(p, 16, s->end + shift);
    put32(p, 24, 4242); /* processId */
    put32(p, 28, s->thread);
    put32(p, 32, s->correlation);
    put32(p, 36, 0); /* returnValue */
  } else {
    if (s->kind == 1) p[4] = s->copy_kind;
    put64(p, 8, s->bytes);
    put64(p, 16, s->start + shift);
    put64(p, 24, s->end + shift);
    put32(p, 32, s->device);
    put32(p, 40, s->stream);
    put32(p, 44, s->correlation);
    put32(p, 72, s->graph_id);
  }
}

int cuptiActivityGetNextRecord(uint8_t* buffer, size_t valid, void** record) {
  uint8_t* cur = (uint8_t*)*record;
  uint8_t* next;
  if (!cur) {
    next = buffer;
  } else {
    uint32_t kind;
    memcpy(&kind, cur, 4);
    next = cur + record_size((int)kind);
  }
  if (next >= buffer + valid) return 12; /* CUPTI_ERROR_MAX_LIMIT_REACHED */
  *record = next;
  return 0;
}

int cuptiActivityGetNumDroppedRecords(void* ctx, uint32_t stream, size_t* dropped) {
  (void)ctx;
  (void)stream;
  int rc = entry("cuptiActivityGetNumDroppedRecords");
  if (rc) return rc;
  const char* env = getenv("FAKE_CUPTI_DROPPED");
  *dropped = scripted_dropped + pool_dropped + (env ? (size_t)atol(env) : 0);
  scripted_dropped = pool_dropped = 0;
  if (env) unsetenv("FAKE_CUPTI_DROPPED");
  return 0;
}

typedef struct { uint8_t* buf; size_t size, used; } held_t;

int cuptiActivityFlushAll(uint32_t flag) {
  (void)flag;
  int rc = entry("cuptiActivityFlushAll");
  if (rc) return rc;
  if (!on_request || !on_complete) return 0;
  pthread_mutex_lock(&mu);
  held_t held[MAX_RECORDS];
  int n_held = 0, i = 0;
  while (i < n_script) {
    uint8_t* buf = 0;
    size_t size = 0, max_records = 0;
    on_request(&buf, &size, &max_records);
    if (!buf) { /* no buffer: CUPTI drops the records it cannot place, and counts them */
      for (; i < n_script; ++i) pool_dropped++;
      break;
    }
    size_t used = 0;
    while (i < n_script && used + record_size(script[i].kind) <= size) {
      if (ever_enabled[script[i].kind]) {
        write_record(buf + used, &script[i]);
        used += record_size(script[i].kind);
      }
      ++i;
    }
    if (hold_buffers) {
      held[n_held].buf = buf;
      held[n_held].size = size;
      held[n_held].used = used;
      ++n_held;
    } else {
      on_complete(0, 0, buf, size, used);
    }
  }
  for (int h = 0; h < n_held; ++h) on_complete(0, 0, held[h].buf, held[h].size, held[h].used);
  /* Delivered records leave the script; names stay valid until reset (CUPTI owns them too). */
  for (int k = 0; k < i; ++k) script[k].kind = -1;
  int kept = 0;
  for (int k = 0; k < n_script; ++k) {
    if (script[k].kind != -1) script[kept++] = script[k];
  }
  n_script = kept;
  if (pool_dropped) on_complete(0, 0, 0, 0, 0); /* no buffer to hand back; counts are read by the tracer */
  pthread_mutex_unlock(&mu);
  return 0;
}
