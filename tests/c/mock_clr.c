/*
 * mock_clr.c: a mock runtime that drives hostmem's COM objects the way the
 * CLR drives its host's: it gets the memory manager through
 * IHostControl::GetHostManager, asks for the other managers (and must cope
 * with E_NOINTERFACE), calls every IHostMemoryManager method through the
 * vtable, registers an ICLRMemoryNotificationCallback of its own, counts
 * references, and calls from several threads at once.
 *
 * Built and run by tests/mock_clr.rs (also under valgrind). Prints
 * every failed check, then "mock_clr: N passed, M failed" (tests/c/check.h),
 * and exits non-zero on any failure.
 */
#define _GNU_SOURCE /* mincore, MAP_ANONYMOUS, nanosleep */
#include <hostmem.h>
#include <hostmem/com.h>

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------------ */
#define CHECK_PROGRAM "mock_clr"
#include "check.h"

/* CHECK_HR: an HRESULT is `expected`. */
#define CHECK_HR(expr, expected)                                                          \
    ((void)check_eq_at((uint32_t)(expr), (uint32_t)(expected), __FILE__, __LINE__, #expr, \
                       #expected))

/* ------------------------------------------------------------------------
 * Constants and helpers
 * ------------------------------------------------------------------------ */
#define MEM_COMMIT     HOSTMEM_MEM_COMMIT
#define MEM_RESERVE    HOSTMEM_MEM_RESERVE
#define MEM_DECOMMIT   HOSTMEM_MEM_DECOMMIT
#define MEM_RELEASE    HOSTMEM_MEM_RELEASE
#define MEM_FREE       HOSTMEM_MEM_FREE
#define MEM_PRIVATE    HOSTMEM_MEM_PRIVATE
#define PAGE_NOACCESS  HOSTMEM_PAGE_NOACCESS
#define PAGE_READONLY  HOSTMEM_PAGE_READONLY
#define PAGE_READWRITE HOSTMEM_PAGE_READWRITE
#define PAGE_EXECUTE_READWRITE HOSTMEM_PAGE_EXECUTE_READWRITE
#define GRANULE        ((size_t)0x10000)
#define PAGE           ((size_t)0x1000)

#define HR_INVALID_ADDRESS HRESULT_FROM_WIN32(487) /* 0x800701E7 */
#define HR_BAD_LENGTH      HRESULT_FROM_WIN32(24)  /* 0x80070018 */

typedef hostmem_MEMORY_BASIC_INFORMATION MBI;

/* The layouts hostmem's Rust side has (src/ffi/com): hostmem_config is 24
 * bytes; each method sits at its mscoree.h slot. */
#define SLOT(vtbl, method) (offsetof(vtbl, method) / sizeof(void*))
_Static_assert(sizeof(hostmem_config) == 24, "hostmem_config is 24 bytes");
_Static_assert(offsetof(hostmem_config, budget_bytes) == 8, "budget_bytes at 8");
_Static_assert(offsetof(hostmem_config, high_memory_percent) == 20, "high_memory_percent at 20");
_Static_assert(sizeof(GUID) == 16, "GUID is 16 bytes");
_Static_assert(SLOT(IHostMemoryManagerVtbl, Release) == 2, "IUnknown first");
_Static_assert(SLOT(IHostMemoryManagerVtbl, CreateMalloc) == 3, "CreateMalloc: slot 3");
_Static_assert(SLOT(IHostMemoryManagerVtbl, VirtualAlloc) == 4, "VirtualAlloc: slot 4");
_Static_assert(SLOT(IHostMemoryManagerVtbl, VirtualFree) == 5, "VirtualFree: slot 5");
_Static_assert(SLOT(IHostMemoryManagerVtbl, VirtualQuery) == 6, "VirtualQuery: slot 6");
_Static_assert(SLOT(IHostMemoryManagerVtbl, VirtualProtect) == 7, "VirtualProtect: slot 7");
_Static_assert(SLOT(IHostMemoryManagerVtbl, GetMemoryLoad) == 8, "GetMemoryLoad: slot 8");
_Static_assert(SLOT(IHostMemoryManagerVtbl, RegisterMemoryNotificationCallback) == 9, "slot 9");
_Static_assert(SLOT(IHostMemoryManagerVtbl, NeedsVirtualAddressSpace) == 10, "slot 10");
_Static_assert(SLOT(IHostMemoryManagerVtbl, AcquiredVirtualAddressSpace) == 11, "slot 11");
_Static_assert(SLOT(IHostMemoryManagerVtbl, ReleasedVirtualAddressSpace) == 12, "slot 12");
_Static_assert(sizeof(IHostMemoryManagerVtbl) == 13 * sizeof(void*), "13 slots");
_Static_assert(SLOT(IHostMallocVtbl, Free) == 5 && sizeof(IHostMallocVtbl) == 6 * sizeof(void*), "IHostMalloc");
_Static_assert(SLOT(ICLRMemoryNotificationCallbackVtbl, OnMemoryNotification) == 3, "OnMemoryNotification");
_Static_assert(SLOT(IHostControlVtbl, GetHostManager) == 3, "GetHostManager: slot 3");
_Static_assert(SLOT(IHostControlVtbl, SetAppDomainManager) == 4, "SetAppDomainManager: slot 4");

/* Manager IIDs the CLR asks an IHostControl for (mscoree.h). */
static const IID IID_IHostTaskManager =
    { 0x997FF24C, 0x43B7, 0x4352, { 0x86, 0x67, 0x0D, 0xC0, 0x4F, 0xAF, 0xD3, 0x54 } };
static const IID IID_IHostThreadpoolManager =
    { 0x983D50E2, 0xCB15, 0x466B, { 0x80, 0xFC, 0x84, 0x5D, 0xC6, 0xE8, 0xC5, 0xFD } };
static const IID IID_IHostIoCompletionManager =
    { 0x8BDE9D80, 0xEC06, 0x41D6, { 0x83, 0xE6, 0x22, 0x58, 0x0E, 0xFF, 0xCC, 0x20 } };
static const IID IID_Nonsense =
    { 0x12345678, 0x9ABC, 0xDEF0, { 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0 } };

static void* alloc(IHostMemoryManager* m, void* address, size_t size, uint32_t type, uint32_t protect) {
    void* p = (void*)1;
    HRESULT hr = m->lpVtbl->VirtualAlloc(m, address, size, type, protect, eTaskCritical, &p);
    if (FAILED(hr)) {
        if (p != NULL) {
            printf("VirtualAlloc failed (0x%08X) without setting *ppMem to NULL\n", (unsigned)hr);
        }
        return NULL;
    }
    return p;
}

static HRESULT query(IHostMemoryManager* m, const void* address, MBI* mbi) {
    size_t written = 12345;
    memset(mbi, 0xAB, sizeof *mbi);
    HRESULT hr = m->lpVtbl->VirtualQuery(m, (void*)address, mbi, sizeof *mbi, &written);
    if (SUCCEEDED(hr) && written != sizeof *mbi) {
        printf("VirtualQuery succeeded but wrote %zu bytes\n", written);
        return E_FAIL;
    }
    return hr;
}

static uint32_t refcount_of(IUnknown* object) {
    /* AddRef then Release: the count Release returns is the current one. */
    object->lpVtbl->AddRef(object);
    return object->lpVtbl->Release(object);
}

/* Whether any page of [p, p + size) is mapped in this process (p is
 * page-aligned). */
static int is_mapped(const void* p, size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t offset = 0; offset < size; offset += page) {
        unsigned char resident;
        if (mincore((char*)p + offset, page, &resident) == 0 || errno != ENOMEM) return 1;
    }
    return 0;
}

static int filled_with(const void* p, size_t size, unsigned char byte) {
    const unsigned char* b = (const unsigned char*)p;
    for (size_t i = 0; i < size; i++) {
        if (b[i] != byte) return 0;
    }
    return 1;
}

static IHostMemoryManager* new_manager(void) {
    IHostMemoryManager* m = NULL;
    HRESULT hr = hostmem_CreateMemoryManager(NULL, &m);
    if (hr != S_OK || m == NULL) {
        printf("hostmem_CreateMemoryManager failed: 0x%08X\n", (unsigned)hr);
        exit(2);
    }
    return m;
}

/* ------------------------------------------------------------------------
 * A CLR-style ICLRMemoryNotificationCallback
 * ------------------------------------------------------------------------ */
typedef struct MockCallback {
    ICLRMemoryNotificationCallback iface; /* first: the interface pointer points here */
    atomic_uint refs;
    atomic_uint notifications;
    atomic_int last_state;
    atomic_int bad_state; /* a state outside EMemoryAvailable was reported */
} MockCallback;

static HRESULT STDMETHODCALLTYPE cb_query_interface(ICLRMemoryNotificationCallback* This, REFIID riid,
                                                    void** out) {
    if (out == NULL) return E_POINTER;
    if (memcmp(riid, &IID_IUnknown, sizeof(IID)) == 0 ||
        memcmp(riid, &IID_ICLRMemoryNotificationCallback, sizeof(IID)) == 0) {
        This->lpVtbl->AddRef(This);
        *out = This;
        return S_OK;
    }
    *out = NULL;
    return E_NOINTERFACE;
}

static uint32_t STDMETHODCALLTYPE cb_add_ref(ICLRMemoryNotificationCallback* This) {
    return atomic_fetch_add(&((MockCallback*)This)->refs, 1) + 1;
}

static uint32_t STDMETHODCALLTYPE cb_release(ICLRMemoryNotificationCallback* This) {
    /* Storage is the test's (it checks the count reaches 0 at the end). */
    return atomic_fetch_sub(&((MockCallback*)This)->refs, 1) - 1;
}

static HRESULT STDMETHODCALLTYPE cb_on_memory_notification(ICLRMemoryNotificationCallback* This,
                                                           EMemoryAvailable state) {
    MockCallback* cb = (MockCallback*)This;
    if (state < eMemoryAvailableLow || state > eMemoryAvailableHigh) atomic_store(&cb->bad_state, 1);
    atomic_store(&cb->last_state, (int)state);
    atomic_fetch_add(&cb->notifications, 1);
    return S_OK;
}

static const ICLRMemoryNotificationCallbackVtbl mock_callback_vtbl = {
    cb_query_interface, cb_add_ref, cb_release, cb_on_memory_notification,
};

static void mock_callback_init(MockCallback* cb) {
    cb->iface.lpVtbl = &mock_callback_vtbl;
    atomic_init(&cb->refs, 1);
    atomic_init(&cb->notifications, 0);
    atomic_init(&cb->last_state, 0);
    atomic_init(&cb->bad_state, 0);
}

/* ------------------------------------------------------------------------
 * Creation and configuration
 * ------------------------------------------------------------------------ */
static void test_create(void) {
    IHostMemoryManager* m = (IHostMemoryManager*)1;
    hostmem_config config;

    CHECK_HR(hostmem_CreateMemoryManager(NULL, NULL), E_POINTER);

    memset(&config, 0, sizeof config);
    CHECK_HR(hostmem_CreateMemoryManager(&config, &m), E_INVALIDARG); /* size 0 */
    CHECK(m == NULL);
    config.size = 8;
    m = (IHostMemoryManager*)1;
    CHECK_HR(hostmem_CreateMemoryManager(&config, &m), E_INVALIDARG); /* too small */
    CHECK(m == NULL);
    config.size = (uint32_t)sizeof config - 1;
    CHECK_HR(hostmem_CreateMemoryManager(&config, &m), E_INVALIDARG);

    config.size = (uint32_t)sizeof config; /* every other field 0: defaults */
    CHECK_HR(hostmem_CreateMemoryManager(&config, &m), S_OK);
    CHECK(m != NULL);
    if (m) CHECK(m->lpVtbl->Release(m) == 0);

    config.low_memory_percent = 50; /* high defaults to 60: not below low */
    CHECK_HR(hostmem_CreateMemoryManager(&config, &m), E_INVALIDARG);
    config.low_memory_percent = 101;
    CHECK_HR(hostmem_CreateMemoryManager(&config, &m), E_INVALIDARG);

    /* A later version's longer struct: the known prefix is read. */
    struct {
        hostmem_config v1;
        uint64_t future_field;
    } longer;
    memset(&longer, 0, sizeof longer);
    longer.v1.size = (uint32_t)sizeof longer;
    longer.v1.lock_timeout_ms = 1000;
    longer.future_field = 0xFFFFFFFFFFFFFFFFull;
    CHECK_HR(hostmem_CreateMemoryManager(&longer.v1, &m), S_OK);
    if (m) CHECK(m->lpVtbl->Release(m) == 0);

    m = new_manager();
    IHostControl* control = (IHostControl*)1;
    CHECK_HR(hostmem_CreateHostControl(NULL, &control), E_POINTER);
    CHECK(control == NULL);
    CHECK_HR(hostmem_CreateHostControl(m, NULL), E_POINTER);
    CHECK(refcount_of((IUnknown*)m) == 1); /* nothing kept by the failures */
    CHECK(m->lpVtbl->Release(m) == 0);
}

/* ------------------------------------------------------------------------
 * QueryInterface
 * ------------------------------------------------------------------------ */
static void test_query_interface(void) {
    IHostMemoryManager* m = new_manager();
    IHostControl* control = NULL;
    CHECK_HR(hostmem_CreateHostControl(m, &control), S_OK);
    void* out = NULL;

    /* The manager: IUnknown and IHostMemoryManager, with a reference. */
    CHECK_HR(m->lpVtbl->QueryInterface(m, &IID_IUnknown, &out), S_OK);
    CHECK(out == m);
    CHECK(refcount_of((IUnknown*)m) == 3); /* host, control, this QI */
    m->lpVtbl->Release(m);
    CHECK_HR(m->lpVtbl->QueryInterface(m, &IID_IHostMemoryManager, &out), S_OK);
    CHECK(out == m);
    CHECK(m->lpVtbl->Release(m) == 2);
    const IID* not_manager[] = { &IID_IHostControl, &IID_IHostMalloc, &IID_ICLRMemoryNotificationCallback,
                                 &IID_IHostTaskManager, &IID_Nonsense };
    for (size_t i = 0; i < sizeof not_manager / sizeof *not_manager; i++) {
        out = (void*)1;
        CHECK_HR(m->lpVtbl->QueryInterface(m, not_manager[i], &out), E_NOINTERFACE);
        CHECK(out == NULL);
    }
    CHECK_HR(m->lpVtbl->QueryInterface(m, &IID_IUnknown, NULL), E_POINTER);
    CHECK(refcount_of((IUnknown*)m) == 2);

    /* The control: IUnknown and IHostControl. */
    CHECK_HR(control->lpVtbl->QueryInterface(control, &IID_IUnknown, &out), S_OK);
    CHECK(out == control);
    CHECK(control->lpVtbl->Release(control) == 1);
    CHECK_HR(control->lpVtbl->QueryInterface(control, &IID_IHostControl, &out), S_OK);
    CHECK(out == control);
    CHECK(control->lpVtbl->Release(control) == 1);
    out = (void*)1;
    CHECK_HR(control->lpVtbl->QueryInterface(control, &IID_IHostMemoryManager, &out), E_NOINTERFACE);
    CHECK(out == NULL);
    CHECK_HR(control->lpVtbl->QueryInterface(control, &IID_IHostControl, NULL), E_POINTER);

    CHECK(control->lpVtbl->Release(control) == 0);
    CHECK(m->lpVtbl->Release(m) == 0);
}

/* ------------------------------------------------------------------------
 * IHostControl as the CLR uses it
 * ------------------------------------------------------------------------ */
static void test_host_control(void) {
    IHostMemoryManager* m = new_manager();
    IHostControl* control = NULL;
    CHECK_HR(hostmem_CreateHostControl(m, &control), S_OK);
    CHECK(control != NULL);
    if (!control) return;
    CHECK(refcount_of((IUnknown*)m) == 2); /* the control holds one */

    void* out = NULL;
    CHECK_HR(control->lpVtbl->GetHostManager(control, &IID_IHostMemoryManager, &out), S_OK);
    CHECK(out == m);
    CHECK(refcount_of((IUnknown*)m) == 3); /* handed out with a reference */
    CHECK(m->lpVtbl->Release(m) == 2);

    /* Every other manager the CLR asks for: E_NOINTERFACE, *out NULL. */
    const IID* others[] = { &IID_IHostTaskManager, &IID_IHostThreadpoolManager, &IID_IHostIoCompletionManager,
                            &IID_IHostMalloc, &IID_IHostControl, &IID_IUnknown, &IID_Nonsense };
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        out = (void*)1;
        CHECK_HR(control->lpVtbl->GetHostManager(control, others[i], &out), E_NOINTERFACE);
        CHECK(out == NULL);
    }
    CHECK_HR(control->lpVtbl->GetHostManager(control, &IID_IHostMemoryManager, NULL), E_POINTER);
    CHECK(refcount_of((IUnknown*)m) == 2);

    /* SetAppDomainManager: S_OK, and hostmem keeps no reference. */
    MockCallback some_object;
    mock_callback_init(&some_object);
    CHECK_HR(control->lpVtbl->SetAppDomainManager(control, 1, (IUnknown*)&some_object.iface), S_OK);
    CHECK_HR(control->lpVtbl->SetAppDomainManager(control, 2, NULL), S_OK);
    CHECK(atomic_load(&some_object.refs) == 1);

    CHECK(control->lpVtbl->AddRef(control) == 2);
    CHECK(control->lpVtbl->Release(control) == 1);
    CHECK(control->lpVtbl->Release(control) == 0);
    CHECK(refcount_of((IUnknown*)m) == 1); /* the control gave its reference back */
    CHECK(m->lpVtbl->Release(m) == 0);
}

/* ------------------------------------------------------------------------
 * Reference counting to zero: the control keeps the manager alive; the
 * last reference releases the manager's regions.
 * ------------------------------------------------------------------------ */
static void test_reference_counting(void) {
    IHostMemoryManager* m = new_manager();
    CHECK(m->lpVtbl->AddRef(m) == 2);
    CHECK(m->lpVtbl->AddRef(m) == 3);
    CHECK(m->lpVtbl->Release(m) == 2);
    CHECK(m->lpVtbl->Release(m) == 1);

    IHostControl* control = NULL;
    CHECK_HR(hostmem_CreateHostControl(m, &control), S_OK);
    if (!control) return;
    char* kept = (char*)alloc(m, NULL, 4 * GRANULE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    CHECK(kept != NULL);
    if (kept) memset(kept, 0x5A, 4 * GRANULE);

    /* The host lets go of its own reference: the control keeps the manager. */
    CHECK(m->lpVtbl->Release(m) == 1);
    IHostMemoryManager* from_control = NULL;
    CHECK_HR(control->lpVtbl->GetHostManager(control, &IID_IHostMemoryManager, (void**)&from_control), S_OK);
    CHECK(from_control == m);
    if (!from_control) return;
    MBI mbi;
    CHECK_HR(query(from_control, kept, &mbi), S_OK);
    CHECK(mbi.State == MEM_COMMIT && mbi.AllocationBase == kept);
    CHECK(kept && filled_with(kept, 4 * GRANULE, 0x5A));
    char* p = (char*)alloc(from_control, NULL, GRANULE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    CHECK(p != NULL);
    CHECK_HR(from_control->lpVtbl->VirtualFree(from_control, p, 0, MEM_RELEASE), S_OK);
    CHECK(from_control->lpVtbl->Release(from_control) == 1);

    /* The runtime releases the control: the manager goes with it, and the
     * region nobody freed is released with the manager. */
    CHECK(is_mapped(kept, 4 * GRANULE));
    CHECK(control->lpVtbl->Release(control) == 0);
    CHECK(!is_mapped(kept, 4 * GRANULE));
}

/* ------------------------------------------------------------------------
 * The seed: IHostMemoryManager::VirtualFree
 * ------------------------------------------------------------------------ */
static unsigned char static_global[2 * 4096] = { 0x11 };
static int some_function(int x) { return x * 3 + 1; }

static void check_foreign_free(IHostMemoryManager* m, void* address, const char* what) {
    HRESULT release = m->lpVtbl->VirtualFree(m, address, 0, MEM_RELEASE);
    HRESULT decommit = m->lpVtbl->VirtualFree(m, address, PAGE, MEM_DECOMMIT);
    HRESULT decommit_all = m->lpVtbl->VirtualFree(m, address, 0, MEM_DECOMMIT);
    char buf[160];
    snprintf(buf, sizeof buf, "VirtualFree(%s, 0, MEM_RELEASE)", what);
    check_eq_at((uint32_t)release, (uint32_t)HOST_E_INVALIDOPERATION, __FILE__, __LINE__, buf,
                "HOST_E_INVALIDOPERATION");
    snprintf(buf, sizeof buf, "VirtualFree(%s, 0x1000, MEM_DECOMMIT)", what);
    check_eq_at((uint32_t)decommit, (uint32_t)HOST_E_INVALIDOPERATION, __FILE__, __LINE__, buf,
                "HOST_E_INVALIDOPERATION");
    snprintf(buf, sizeof buf, "VirtualFree(%s, 0, MEM_DECOMMIT)", what);
    check_eq_at((uint32_t)decommit_all, (uint32_t)HOST_E_INVALIDOPERATION, __FILE__, __LINE__, buf,
                "HOST_E_INVALIDOPERATION");
}

static void test_virtual_free(void) {
    IHostMemoryManager* m = new_manager();
    IHostMemoryManager* other = new_manager();
    MBI mbi;

    /* Own memory: released with S_OK, then free. */
    char* own = (char*)alloc(m, NULL, GRANULE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    CHECK(own != NULL);
    if (!own) return;
    own[0] = 1;
    CHECK_HR(m->lpVtbl->VirtualFree(m, own, 0, MEM_RELEASE), S_OK);
    CHECK_HR(query(m, own, &mbi), S_OK);
    CHECK(mbi.AllocationBase != own);
    /* Double free. */
    CHECK_HR(m->lpVtbl->VirtualFree(m, own, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);

    /* Foreign memory of every kind: refused, and left intact. */
    unsigned char on_stack[256];
    memset(on_stack, 0x22, sizeof on_stack);
    check_foreign_free(m, on_stack, "a stack variable");
    CHECK(filled_with(on_stack, sizeof on_stack, 0x22));
    on_stack[0] = 0x23; /* still writable */
    CHECK(on_stack[0] == 0x23);

    unsigned char* heap = (unsigned char*)malloc(3 * PAGE);
    CHECK(heap != NULL);
    if (heap) {
        memset(heap, 0x33, 3 * PAGE);
        check_foreign_free(m, heap, "a malloc'd block");
        CHECK(filled_with(heap, 3 * PAGE, 0x33));
        heap[3 * PAGE - 1] = 0x34;
        free(heap);
    }

    memset(static_global, 0x44, sizeof static_global);
    check_foreign_free(m, static_global, "a static global");
    CHECK(filled_with(static_global, sizeof static_global, 0x44));
    static_global[0] = 0x45;

    union {
        int (*fn)(int);
        void* p;
    } code;
    code.fn = some_function;
    check_foreign_free(m, code.p, "a function's address");
    CHECK(some_function(4) == 13); /* the code is still there and executable */

    char* others = (char*)alloc(other, NULL, 2 * GRANULE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    CHECK(others != NULL);
    if (others) {
        memset(others, 0x55, 2 * GRANULE);
        check_foreign_free(m, others, "another manager's region");
        CHECK(filled_with(others, 2 * GRANULE, 0x55));
        CHECK_HR(query(other, others, &mbi), S_OK);
        CHECK(mbi.State == MEM_COMMIT && mbi.AllocationBase == others && mbi.RegionSize == 2 * GRANULE);
        CHECK_HR(other->lpVtbl->VirtualFree(other, others, 0, MEM_RELEASE), S_OK); /* its owner can */
    }

    unsigned char* mapped =
        (unsigned char*)mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(mapped != MAP_FAILED);
    if (mapped != MAP_FAILED) {
        memset(mapped, 0x66, 4 * PAGE);
        check_foreign_free(m, mapped, "the test's own mmap");
        CHECK(filled_with(mapped, 4 * PAGE, 0x66));
        mapped[4 * PAGE - 1] = 0x67;
        CHECK(munmap(mapped, 4 * PAGE) == 0);
    }

    check_foreign_free(m, NULL, "NULL");
    check_foreign_free(m, (void*)(uintptr_t)0x8000000000000000ull, "a non-canonical address");
    check_foreign_free(m, (void*)(uintptr_t)0xFFFFFFFFFFFF0000ull, "a kernel address");

    /* Interior pointers: base + 0x1001 is not the base (ERROR_INVALID_ADDRESS);
     * base + 0xfff rounds down to it. */
    char* region = (char*)alloc(m, NULL, 2 * GRANULE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    CHECK(region != NULL);
    if (!region) return;
    memset(region, 0x77, 2 * GRANULE);
    CHECK_HR(m->lpVtbl->VirtualFree(m, region + 0x1001, 0, MEM_RELEASE), HR_INVALID_ADDRESS);
    CHECK_HR(m->lpVtbl->VirtualFree(m, region + GRANULE, 0, MEM_RELEASE), HR_INVALID_ADDRESS);

    /* Bad free types: ERROR_INVALID_PARAMETER, nothing changes. */
    CHECK_HR(m->lpVtbl->VirtualFree(m, region, 0, 0), E_INVALIDARG);
    CHECK_HR(m->lpVtbl->VirtualFree(m, region, 0, MEM_DECOMMIT | MEM_RELEASE), E_INVALIDARG);
    CHECK_HR(m->lpVtbl->VirtualFree(m, region, 0, MEM_FREE), E_INVALIDARG);
    CHECK_HR(m->lpVtbl->VirtualFree(m, region, PAGE, MEM_RELEASE), E_INVALIDARG); /* size != 0 */
    CHECK(filled_with(region, 2 * GRANULE, 0x77));
    CHECK_HR(query(m, region, &mbi), S_OK);
    CHECK(mbi.State == MEM_COMMIT && mbi.RegionSize == 2 * GRANULE);

    /* Decommit one page, then release through base + 0xfff. */
    CHECK_HR(m->lpVtbl->VirtualFree(m, region + PAGE, PAGE, MEM_DECOMMIT), S_OK);
    CHECK_HR(query(m, region + PAGE, &mbi), S_OK);
    CHECK(mbi.State == MEM_RESERVE && mbi.RegionSize == PAGE);
    CHECK_HR(m->lpVtbl->VirtualFree(m, region + 0xfff, 0, MEM_RELEASE), S_OK);
    CHECK_HR(m->lpVtbl->VirtualFree(m, region, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);

    CHECK(other->lpVtbl->Release(other) == 0);
    CHECK(m->lpVtbl->Release(m) == 0);
}

/* ------------------------------------------------------------------------
 * The other methods through the vtable, with NULL out-pointers
 * ------------------------------------------------------------------------ */
static void test_methods(void) {
    IHostMemoryManager* m = new_manager();
    void* p = (void*)1;
    MBI mbi;
    size_t written = 99;

    /* VirtualAlloc */
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, GRANULE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, NULL),
             E_POINTER);
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, GRANULE, MEM_RESERVE, PAGE_READWRITE, (EMemoryCriticalLevel)3, &p),
             E_INVALIDARG);
    CHECK(p == NULL);
    p = (void*)1;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, GRANULE, MEM_RESERVE, PAGE_READWRITE, (EMemoryCriticalLevel)-1, &p),
             E_INVALIDARG);
    CHECK(p == NULL);
    p = (void*)1;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, 0, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), E_INVALIDARG);
    CHECK(p == NULL);
    p = (void*)1;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, GRANULE, MEM_RELEASE, PAGE_READWRITE, eTaskCritical, &p), E_INVALIDARG);
    CHECK(p == NULL);

    char* base = NULL;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, 4 * GRANULE, MEM_RESERVE, PAGE_READWRITE, eProcessCritical,
                                     (void**)&base),
             S_OK);
    CHECK(base != NULL && ((uintptr_t)base % GRANULE) == 0);
    if (!base) return;
    void* committed = NULL;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, base + 0x1234, 0x100, MEM_COMMIT, PAGE_READWRITE, eAppDomainCritical,
                                     &committed),
             S_OK);
    CHECK(committed == base + 0x1000);
    memset(base + 0x1000, 0x42, PAGE);
    /* Committing memory that is not the host's. */
    unsigned char on_stack[64];
    memset(on_stack, 1, sizeof on_stack);
    p = (void*)1;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, on_stack, PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
             HOST_E_INVALIDOPERATION);
    CHECK(p == NULL);
    CHECK(filled_with(on_stack, sizeof on_stack, 1));

    /* VirtualQuery */
    CHECK_HR(m->lpVtbl->VirtualQuery(m, base, &mbi, sizeof mbi, NULL), E_POINTER);
    written = 99;
    CHECK_HR(m->lpVtbl->VirtualQuery(m, base, NULL, sizeof mbi, &written), E_POINTER);
    CHECK(written == 0);
    written = 99;
    CHECK_HR(m->lpVtbl->VirtualQuery(m, base, &mbi, sizeof mbi - 1, &written), HR_BAD_LENGTH);
    CHECK(written == 0);
    written = 0;
    memset(&mbi, 0xCD, sizeof mbi);
    CHECK_HR(m->lpVtbl->VirtualQuery(m, base + 0x1800, &mbi, sizeof mbi, &written), S_OK);
    CHECK(written == 48);
    CHECK(mbi.BaseAddress == base + 0x1000);
    CHECK(mbi.AllocationBase == base);
    CHECK(mbi.AllocationProtect == PAGE_READWRITE);
    CHECK(mbi.RegionSize == PAGE);
    CHECK(mbi.State == MEM_COMMIT);
    CHECK(mbi.Protect == PAGE_READWRITE);
    CHECK(mbi.Type == MEM_PRIVATE);
    /* A bigger buffer: still exactly 48 bytes written. */
    unsigned char big[64];
    memset(big, 0xEE, sizeof big);
    CHECK_HR(m->lpVtbl->VirtualQuery(m, base, big, sizeof big, &written), S_OK);
    CHECK(written == 48 && filled_with(big + 48, 16, 0xEE));
    CHECK(((MBI*)(void*)big)->State == MEM_RESERVE && ((MBI*)(void*)big)->RegionSize == PAGE);
    /* Memory that is not the host's is described from the kernel's view. */
    CHECK_HR(query(m, on_stack, &mbi), S_OK);
    CHECK(mbi.State == MEM_COMMIT && (mbi.Protect & PAGE_READWRITE));

    /* VirtualProtect */
    uint32_t old = 0xFFFF;
    CHECK_HR(m->lpVtbl->VirtualProtect(m, base + 0x1000, PAGE, PAGE_READONLY, NULL), E_POINTER);
    CHECK_HR(query(m, base + 0x1000, &mbi), S_OK);
    CHECK(mbi.Protect == PAGE_READWRITE); /* nothing changed */
    CHECK_HR(m->lpVtbl->VirtualProtect(m, base + 0x1000, PAGE, PAGE_READONLY, &old), S_OK);
    CHECK(old == PAGE_READWRITE);
    CHECK_HR(query(m, base + 0x1000, &mbi), S_OK);
    CHECK(mbi.Protect == PAGE_READONLY);
    CHECK(filled_with(base + 0x1000, PAGE, 0x42));
    CHECK_HR(m->lpVtbl->VirtualProtect(m, base, PAGE, PAGE_READWRITE, &old), HR_INVALID_ADDRESS); /* reserved */
    CHECK_HR(m->lpVtbl->VirtualProtect(m, on_stack, PAGE, PAGE_NOACCESS, &old), HOST_E_INVALIDOPERATION);
    on_stack[0] = 2; /* still writable */
    CHECK(on_stack[0] == 2);

    /* GetMemoryLoad */
    uint32_t load = 0xFFFF;
    size_t available = 0;
    CHECK_HR(m->lpVtbl->GetMemoryLoad(m, NULL, &available), E_POINTER);
    CHECK_HR(m->lpVtbl->GetMemoryLoad(m, &load, NULL), E_POINTER);
    HRESULT hr = m->lpVtbl->GetMemoryLoad(m, &load, &available);
    if (hr == E_NOTIMPL) {
        check_skip("GetMemoryLoad returns E_NOTIMPL");
    } else {
        CHECK_HR(hr, S_OK);
        CHECK(load <= 100);
        CHECK(available > 0);
    }

    /* CreateMalloc (the heaps themselves: test_malloc). */
    CHECK_HR(m->lpVtbl->CreateMalloc(m, MALLOC_THREADSAFE, NULL), E_POINTER);
    IHostMalloc* heap = (IHostMalloc*)1;
    hr = m->lpVtbl->CreateMalloc(m, MALLOC_THREADSAFE, &heap);
    {
        CHECK_HR(hr, S_OK);
        if (heap) {
            void* block = NULL;
            CHECK_HR(heap->lpVtbl->Alloc(heap, 100, eTaskCritical, &block), S_OK);
            if (block) memset(block, 0, 100);
            CHECK_HR(heap->lpVtbl->Free(heap, block), S_OK);
            CHECK(heap->lpVtbl->Release(heap) == 0);
        }
    }

    /* Needs / Acquired / ReleasedVirtualAddressSpace: memory the runtime maps
     * itself. */
    size_t size = 4 * GRANULE;
    void* own_map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(own_map != MAP_FAILED);
    hr = m->lpVtbl->NeedsVirtualAddressSpace(m, own_map, size);
    if (hr == E_NOTIMPL) {
        check_skip("Needs/Acquired/ReleasedVirtualAddressSpace return E_NOTIMPL");
    } else if (own_map != MAP_FAILED) {
        CHECK_HR(hr, S_OK);
        CHECK_HR(m->lpVtbl->AcquiredVirtualAddressSpace(m, own_map, size), S_OK);
        memset(own_map, 0x12, size);
        /* Reported, but still not the host's to free. */
        CHECK_HR(m->lpVtbl->VirtualFree(m, own_map, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
        CHECK(filled_with(own_map, size, 0x12));
        CHECK_HR(m->lpVtbl->ReleasedVirtualAddressSpace(m, own_map), S_OK);
        CHECK_HR(m->lpVtbl->ReleasedVirtualAddressSpace(m, own_map), HOST_E_INVALIDOPERATION);
    }
    if (own_map != MAP_FAILED) munmap(own_map, size);

    CHECK_HR(m->lpVtbl->VirtualFree(m, base, 0, MEM_RELEASE), S_OK);
    CHECK(m->lpVtbl->Release(m) == 0);
}

/* ------------------------------------------------------------------------
 * RegisterMemoryNotificationCallback
 * ------------------------------------------------------------------------ */
static int wait_for_state(MockCallback* cb, int state) {
    for (int i = 0; i < 200; i++) { /* up to 2 s */
        if (atomic_load(&cb->last_state) == state) return 1;
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void test_notification_callback(void) {
    MockCallback cb;
    mock_callback_init(&cb);

    /* Registered, replaced by NULL, registered again, then the manager dies:
     * every reference hostmem took is given back. */
    IHostMemoryManager* m = new_manager();
    HRESULT hr = m->lpVtbl->RegisterMemoryNotificationCallback(m, &cb.iface);
    if (hr == E_NOTIMPL) {
        check_skip("RegisterMemoryNotificationCallback returns E_NOTIMPL");
        CHECK(atomic_load(&cb.refs) == 1);
        m->lpVtbl->Release(m);
        return;
    }
    CHECK_HR(hr, S_OK);
    CHECK(atomic_load(&cb.refs) == 2);
    CHECK_HR(m->lpVtbl->RegisterMemoryNotificationCallback(m, &cb.iface), S_OK); /* again: still one */
    CHECK(atomic_load(&cb.refs) == 2);
    CHECK_HR(m->lpVtbl->RegisterMemoryNotificationCallback(m, NULL), S_OK);
    CHECK(atomic_load(&cb.refs) == 1);
    CHECK_HR(m->lpVtbl->RegisterMemoryNotificationCallback(m, &cb.iface), S_OK);
    CHECK(m->lpVtbl->Release(m) == 0);
    CHECK(atomic_load(&cb.refs) == 1);

    /* With a budget, the runtime is told when its commits cross the
     * thresholds: 1 MiB, low at 80 %, high at 40 %. */
    hostmem_config config;
    memset(&config, 0, sizeof config);
    config.size = (uint32_t)sizeof config;
    config.budget_bytes = 16 * GRANULE;
    config.low_memory_percent = 80;
    config.high_memory_percent = 40;
    CHECK_HR(hostmem_CreateMemoryManager(&config, &m), S_OK);
    if (!m) return;
    CHECK_HR(m->lpVtbl->RegisterMemoryNotificationCallback(m, &cb.iface), S_OK);
    void* big = NULL;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, 14 * GRANULE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                     eProcessCritical, &big),
             S_OK);
    CHECK(wait_for_state(&cb, eMemoryAvailableLow));
    /* Over the budget: E_OUTOFMEMORY, *ppMem NULL. */
    void* more = (void*)1;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, 4 * GRANULE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                     eProcessCritical, &more),
             E_OUTOFMEMORY);
    CHECK(more == NULL);
    uint32_t load = 0;
    size_t available = 0;
    CHECK_HR(m->lpVtbl->GetMemoryLoad(m, &load, &available), S_OK);
    CHECK(load == 87 && available == 2 * GRANULE); /* 14 of 16 granules */
    if (big) CHECK_HR(m->lpVtbl->VirtualFree(m, big, 0, MEM_RELEASE), S_OK);
    CHECK(wait_for_state(&cb, eMemoryAvailableHigh));
    CHECK(atomic_load(&cb.notifications) >= 2);
    CHECK(atomic_load(&cb.bad_state) == 0);
    CHECK(m->lpVtbl->Release(m) == 0);
    CHECK(atomic_load(&cb.refs) == 1); /* balanced */
}

/* ------------------------------------------------------------------------
 * Callbacks that meet another thread's call (under a watchdog)
 *
 * Without a budget, hostmem calls the runtime back from its load-watcher
 * thread. A callback there that calls RegisterMemoryNotificationCallback,
 * or takes a lock of the runtime's, while another thread unregisters or
 * gives back the manager's last reference, must not hang either thread:
 * hostmem waits for no running callback. A callback may also give back
 * the manager's last reference itself. A hang ends the program through
 * the watchdog (SIGALRM) rather than hanging the test run.
 * ------------------------------------------------------------------------ */
static void watchdog_fired(int sig) {
    (void)sig;
    static const char message[] = "mock_clr: deadlock: a callback shape did not finish in time\n";
    ssize_t written = write(STDOUT_FILENO, message, sizeof message - 1);
    (void)written;
    _exit(3);
}

enum { MEET_REGISTER, MEET_LOCK, MEET_RELEASE };

typedef struct MeetingCallback {
    ICLRMemoryNotificationCallback iface; /* first */
    atomic_uint refs;
    atomic_int entered;
    atomic_int finished;
    int mode;
    IHostMemoryManager* manager; /* MEET_REGISTER, MEET_RELEASE: the manager it calls */
    atomic_uint released_to;     /* MEET_RELEASE: what the manager's Release returned */
    pthread_mutex_t* lock;       /* MEET_LOCK: the lock it takes */
} MeetingCallback;

static uint32_t STDMETHODCALLTYPE meet_add_ref(ICLRMemoryNotificationCallback* This) {
    return atomic_fetch_add(&((MeetingCallback*)This)->refs, 1) + 1;
}

static uint32_t STDMETHODCALLTYPE meet_release(ICLRMemoryNotificationCallback* This) {
    return atomic_fetch_sub(&((MeetingCallback*)This)->refs, 1) - 1;
}

static void nap_ms(long ms) {
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000 * 1000 };
    nanosleep(&ts, NULL);
}

static HRESULT STDMETHODCALLTYPE meet_on_memory_notification(ICLRMemoryNotificationCallback* This,
                                                             EMemoryAvailable state) {
    (void)state;
    MeetingCallback* cb = (MeetingCallback*)This;
    int first = 0;
    if (!atomic_compare_exchange_strong(&cb->entered, &first, 1)) return S_OK;
    nap_ms(100); /* the other thread is inside its call by now */
    if (cb->mode == MEET_REGISTER) {
        IHostMemoryManager* m = cb->manager;
        CHECK_HR(m->lpVtbl->RegisterMemoryNotificationCallback(m, NULL), S_OK);
    } else if (cb->mode == MEET_RELEASE) {
        IHostMemoryManager* m = cb->manager;
        atomic_store(&cb->released_to, m->lpVtbl->Release(m)); /* the last reference */
    } else {
        pthread_mutex_lock(cb->lock);
        pthread_mutex_unlock(cb->lock);
    }
    atomic_store(&cb->finished, 1);
    return S_OK;
}

static const ICLRMemoryNotificationCallbackVtbl meeting_callback_vtbl = {
    cb_query_interface, meet_add_ref, meet_release, meet_on_memory_notification,
};

/* Waits up to 10 s for *flag to be set, or for *refs to fall to `refs`. */
static int wait_until(atomic_int* flag, atomic_uint* refs, unsigned target) {
    for (int i = 0; i < 1000; i++) {
        if (flag ? atomic_load(flag) != 0 : atomic_load(refs) == target) return 1;
        nap_ms(10);
    }
    return 0;
}

/* A manager without a budget whose thresholds put any real machine in the
 * low state (2 %), so that the watcher calls back at once. */
static IHostMemoryManager* watched_manager(void) {
    hostmem_config config;
    memset(&config, 0, sizeof config);
    config.size = (uint32_t)sizeof config;
    config.low_memory_percent = 2;
    config.high_memory_percent = 1;
    IHostMemoryManager* m = NULL;
    CHECK_HR(hostmem_CreateMemoryManager(&config, &m), S_OK);
    return m;
}

static void test_callbacks_meeting_other_calls(void) {
    signal(SIGALRM, watchdog_fired);
    alarm(60);

    /* The callback unregisters while this thread unregisters. */
    MeetingCallback cb;
    IHostMemoryManager* m;
    memset(&cb, 0, sizeof cb);
    cb.iface.lpVtbl = &meeting_callback_vtbl;
    atomic_init(&cb.refs, 1);
    cb.mode = MEET_REGISTER;
    m = watched_manager();
    if (!m) return;
    cb.manager = m;
    CHECK_HR(m->lpVtbl->RegisterMemoryNotificationCallback(m, &cb.iface), S_OK);
    if (!wait_until(&cb.entered, NULL, 0)) {
        check_skip("the machine's memory load is under 2 %: no callback to meet");
        CHECK_HR(m->lpVtbl->RegisterMemoryNotificationCallback(m, NULL), S_OK);
        m->lpVtbl->Release(m);
        alarm(0);
        return;
    }
    CHECK_HR(m->lpVtbl->RegisterMemoryNotificationCallback(m, NULL), S_OK);
    CHECK(wait_until(&cb.finished, NULL, 0));
    CHECK(wait_until(NULL, &cb.refs, 1)); /* given back, by whichever thread held it last */
    CHECK(m->lpVtbl->Release(m) == 0);

    /* The last Release, made holding a lock the running callback takes. */
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    MeetingCallback locker;
    memset(&locker, 0, sizeof locker);
    locker.iface.lpVtbl = &meeting_callback_vtbl;
    atomic_init(&locker.refs, 1);
    locker.mode = MEET_LOCK;
    locker.lock = &lock;
    m = watched_manager();
    if (!m) return;
    pthread_mutex_lock(&lock);
    CHECK_HR(m->lpVtbl->RegisterMemoryNotificationCallback(m, &locker.iface), S_OK);
    CHECK(wait_until(&locker.entered, NULL, 0));
    CHECK(m->lpVtbl->Release(m) == 0); /* returns although the callback waits for `lock` */
    pthread_mutex_unlock(&lock);
    CHECK(wait_until(&locker.finished, NULL, 0));
    CHECK(wait_until(NULL, &locker.refs, 1));

    /* The callback gives back the manager's last reference itself. */
    MeetingCallback releaser;
    memset(&releaser, 0, sizeof releaser);
    releaser.iface.lpVtbl = &meeting_callback_vtbl;
    atomic_init(&releaser.refs, 1);
    atomic_init(&releaser.released_to, 99);
    releaser.mode = MEET_RELEASE;
    m = watched_manager();
    if (!m) return;
    releaser.manager = m;
    CHECK_HR(m->lpVtbl->RegisterMemoryNotificationCallback(m, &releaser.iface), S_OK);
    m = NULL; /* the callback's now */
    CHECK(wait_until(&releaser.finished, NULL, 0));
    CHECK(atomic_load(&releaser.released_to) == 0);
    CHECK(wait_until(NULL, &releaser.refs, 1));

    alarm(0);
    signal(SIGALRM, SIG_DFL);
}

/* ------------------------------------------------------------------------
 * Four threads at once
 * ------------------------------------------------------------------------ */
#define THREADS 4
#define ROUNDS 200

static IHostMemoryManager* shared_manager;
static _Atomic(char*) published[THREADS];

typedef struct {
    int index;
    int failures;
} ThreadResult;

static void* worker(void* arg) {
    ThreadResult* result = (ThreadResult*)arg;
    IHostMemoryManager* m = shared_manager;
    const unsigned char pattern = (unsigned char)(0xA0 + result->index);
    for (int round = 0; round < ROUNDS; round++) {
        m->lpVtbl->AddRef(m);
        char* base = NULL;
        HRESULT hr = m->lpVtbl->VirtualAlloc(m, NULL, 4 * GRANULE, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical,
                                             (void**)&base);
        if (hr != S_OK || base == NULL) {
            result->failures++;
            m->lpVtbl->Release(m);
            continue;
        }
        void* committed = NULL;
        hr = m->lpVtbl->VirtualAlloc(m, base + GRANULE, GRANULE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                     &committed);
        if (hr != S_OK || committed != base + GRANULE) result->failures++;
        else memset(base + GRANULE, pattern, GRANULE);
        atomic_store(&published[result->index], base);

        MBI mbi;
        if (query(m, base + GRANULE, &mbi) != S_OK || mbi.State != MEM_COMMIT || mbi.AllocationBase != base ||
            mbi.RegionSize != GRANULE)
            result->failures++;
        /* Query the others' regions: whatever state they are in, the answer
         * is a whole MEMORY_BASIC_INFORMATION. */
        for (int other = 0; other < THREADS; other++) {
            char* theirs = atomic_load(&published[other]);
            if (other == result->index || theirs == NULL) continue;
            if (query(m, theirs + GRANULE, &mbi) != S_OK) result->failures++;
        }
        uint32_t old = 0;
        if (m->lpVtbl->VirtualProtect(m, base + GRANULE, GRANULE, PAGE_READONLY, &old) != S_OK ||
            old != PAGE_READWRITE)
            result->failures++;
        if (!filled_with(base + GRANULE, GRANULE, pattern)) result->failures++;
        if (m->lpVtbl->VirtualFree(m, base + GRANULE, GRANULE, MEM_DECOMMIT) != S_OK) result->failures++;
        atomic_store(&published[result->index], NULL);
        if (m->lpVtbl->VirtualFree(m, base, 0, MEM_RELEASE) != S_OK) result->failures++;
        /* No double free here: once released, the address may at once be
         * reserved again by another thread (the manager reuses the space),
         * so a second release could rightly free that thread's region. The
         * double free is checked single-threaded in test_virtual_free. */
        m->lpVtbl->Release(m);
    }
    return NULL;
}

/* ---- IHostMalloc, as the runtime uses it ---------------------------- */

typedef struct HeapThread {
    IHostMalloc* heap;
    int index;
    int failures;
} HeapThread;

/* Allocates blocks of varied sizes, fills each with a pattern of its own,
 * and checks every pattern before freeing: a heap that hands one block to
 * two threads, or corrupts a free list, breaks a pattern. */
static void* heap_worker(void* arg) {
    HeapThread* t = (HeapThread*)arg;
    enum { LIVE = 64 };
    unsigned char* blocks[LIVE] = {0};
    size_t sizes[LIVE] = {0};
    unsigned seed = 12345u + (unsigned)t->index * 7919u;
    for (int round = 0; round < 4000; round++) {
        seed = seed * 1103515245u + 12345u;
        int slot = (int)((seed >> 8) % LIVE);
        if (blocks[slot]) {
            unsigned char want = (unsigned char)(slot * 31 + t->index);
            if (!filled_with(blocks[slot], sizes[slot], want)) t->failures++;
            if (t->heap->lpVtbl->Free(t->heap, blocks[slot]) != S_OK) t->failures++;
            blocks[slot] = NULL;
        } else {
            size_t size = 16 + (seed >> 12) % 1009;
            void* p = NULL;
            if (t->heap->lpVtbl->Alloc(t->heap, size, eTaskCritical, &p) != S_OK || p == NULL ||
                ((uintptr_t)p & 15) != 0) {
                t->failures++;
                continue;
            }
            memset(p, slot * 31 + t->index, size);
            blocks[slot] = p;
            sizes[slot] = size;
        }
    }
    for (int slot = 0; slot < LIVE; slot++) {
        if (!blocks[slot]) continue;
        if (!filled_with(blocks[slot], sizes[slot], (unsigned char)(slot * 31 + t->index))) t->failures++;
        if (t->heap->lpVtbl->Free(t->heap, blocks[slot]) != S_OK) t->failures++;
    }
    return NULL;
}

/* The next turn on a heap without MALLOC_THREADSAFE, on another thread:
 * frees the block it is given, allocates one and hands it back (NULL if a
 * call failed). */
static void* next_turn(void* arg) {
    IHostMalloc* heap = ((void**)arg)[0];
    void* given = ((void**)arg)[1];
    void* p = NULL;
    if (heap->lpVtbl->Free(heap, given) != S_OK) return NULL;
    if (heap->lpVtbl->Alloc(heap, 32, eTaskCritical, &p) != S_OK) return NULL;
    memset(p, 0x5A, 32);
    return p;
}

static void test_malloc(void) {
    IHostMemoryManager* m = new_manager();
    IHostMalloc* heap = NULL;
    CHECK_HR(m->lpVtbl->CreateMalloc(m, 0x4, &heap), E_INVALIDARG);
    CHECK(heap == NULL);
    CHECK_HR(m->lpVtbl->CreateMalloc(m, MALLOC_THREADSAFE, NULL), E_POINTER);
    CHECK_HR(m->lpVtbl->CreateMalloc(m, MALLOC_THREADSAFE, &heap), S_OK);
    CHECK(heap != NULL);
    if (!heap) {
        m->lpVtbl->Release(m);
        return;
    }
    IUnknown* unknown = NULL;
    CHECK_HR(heap->lpVtbl->QueryInterface(heap, &IID_IHostMalloc, (void**)&unknown), S_OK);
    CHECK(unknown == (IUnknown*)heap);
    CHECK(heap->lpVtbl->Release(heap) == 1);

    /* Alignment, sizes, and size 0 giving unique pointers. */
    void* a = NULL;
    void* b = NULL;
    CHECK_HR(heap->lpVtbl->Alloc(heap, 0, eTaskCritical, &a), S_OK);
    CHECK_HR(heap->lpVtbl->Alloc(heap, 0, eTaskCritical, &b), S_OK);
    CHECK(a != NULL && b != NULL && a != b);
    CHECK_HR(heap->lpVtbl->Alloc(heap, 16, eTaskCritical, NULL), E_POINTER);
    CHECK_HR(heap->lpVtbl->Alloc(heap, 16, 7, &a), E_INVALIDARG);
    CHECK_HR(heap->lpVtbl->Free(heap, b), S_OK);
    void* big = NULL;
    CHECK_HR(heap->lpVtbl->Alloc(heap, 3 << 20, eTaskCritical, &big), S_OK);
    CHECK(big != NULL && ((uintptr_t)big & 15) == 0);
    if (big) memset(big, 0x5A, 3 << 20);
    MBI mbi;
    CHECK_HR(query(m, big, &mbi), S_OK);
    CHECK(mbi.State == MEM_COMMIT && mbi.Protect == PAGE_READWRITE);

    /* Free: NULL is fine; what this heap did not hand out is refused and
     * corrupts nothing. */
    CHECK_HR(heap->lpVtbl->Free(heap, NULL), S_OK);
    char* small = NULL;
    CHECK_HR(heap->lpVtbl->Alloc(heap, 64, eTaskCritical, (void**)&small), S_OK);
    memset(small, 0x33, 64);
    int on_stack = 0;
    void* c_heap = malloc(64);
    IHostMalloc* other = NULL;
    CHECK_HR(m->lpVtbl->CreateMalloc(m, MALLOC_THREADSAFE, &other), S_OK);
    void* theirs = NULL;
    CHECK_HR(other->lpVtbl->Alloc(other, 64, eTaskCritical, &theirs), S_OK);
    CHECK_HR(heap->lpVtbl->Free(heap, &on_stack), HOST_E_INVALIDOPERATION);
    CHECK_HR(heap->lpVtbl->Free(heap, c_heap), HOST_E_INVALIDOPERATION);
    CHECK_HR(heap->lpVtbl->Free(heap, theirs), HOST_E_INVALIDOPERATION);
    CHECK_HR(heap->lpVtbl->Free(heap, small + 16), HOST_E_INVALIDOPERATION);
    CHECK(filled_with(small, 64, 0x33));
    CHECK_HR(heap->lpVtbl->Free(heap, small), S_OK);
    CHECK_HR(heap->lpVtbl->Free(heap, small), HOST_E_INVALIDOPERATION);
    CHECK_HR(other->lpVtbl->Free(other, theirs), S_OK);
    CHECK(other->lpVtbl->Release(other) == 0);
    free(c_heap);

    /* DebugAlloc remembers file and line. */
    void* dbg = NULL;
    CHECK_HR(heap->lpVtbl->DebugAlloc(heap, 40, eAppDomainCritical, (char*)__FILE__, __LINE__, &dbg), S_OK);
    CHECK(dbg != NULL && ((uintptr_t)dbg & 15) == 0);
    CHECK_HR(heap->lpVtbl->DebugAlloc(heap, 40, eAppDomainCritical, NULL, 0, NULL), E_POINTER);
    CHECK_HR(heap->lpVtbl->Free(heap, dbg), S_OK);

    /* 4 threads hammering the thread-safe heap, each block checksummed. */
    pthread_t threads[4];
    HeapThread results[4];
    for (int i = 0; i < 4; i++) {
        results[i] = (HeapThread){heap, i, 0};
        pthread_create(&threads[i], NULL, heap_worker, &results[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        CHECK(results[i].failures == 0);
    }
    CHECK_HR(heap->lpVtbl->Free(heap, big), S_OK);
    CHECK(heap->lpVtbl->Release(heap) == 0);

    /* A heap without MALLOC_THREADSAFE is called one thread at a time, by
     * any thread: the runtime serialises its calls, not its threads. */
    IHostMalloc* mine = NULL;
    CHECK_HR(m->lpVtbl->CreateMalloc(m, 0, &mine), S_OK);
    void* p = NULL;
    CHECK_HR(mine->lpVtbl->Alloc(mine, 32, eTaskCritical, &p), S_OK);
    pthread_t next;
    void* turn[2] = {mine, p};
    void* handed = NULL;
    pthread_create(&next, NULL, next_turn, turn);
    pthread_join(next, &handed);
    CHECK(handed != NULL && ((unsigned char*)handed)[31] == 0x5A);
    CHECK_HR(mine->lpVtbl->Free(mine, handed), S_OK);
    CHECK(mine->lpVtbl->Release(mine) == 0);

#if defined(__x86_64__)
    /* An executable heap's memory runs code: mov eax, 42; ret. */
    IHostMalloc* code = NULL;
    CHECK_HR(m->lpVtbl->CreateMalloc(m, MALLOC_THREADSAFE | MALLOC_EXECUTABLE, &code), S_OK);
    unsigned char* fn = NULL;
    CHECK_HR(code->lpVtbl->Alloc(code, 16, eTaskCritical, (void**)&fn), S_OK);
    if (fn) {
        static const unsigned char body[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};
        memcpy(fn, body, sizeof body);
        int (*call)(void);
        memcpy(&call, &fn, sizeof call);
        CHECK(call() == 42);
        CHECK_HR(query(m, fn, &mbi), S_OK);
        CHECK(mbi.Protect == PAGE_EXECUTE_READWRITE);
        CHECK_HR(code->lpVtbl->Free(code, fn), S_OK);
    }
    CHECK(code->lpVtbl->Release(code) == 0);
#endif
    m->lpVtbl->Release(m);

    /* The budget refuses a heap allocation: E_OUTOFMEMORY, NULL. */
    hostmem_config config;
    memset(&config, 0, sizeof config);
    config.size = sizeof config;
    config.budget_bytes = 4 * GRANULE;
    IHostMemoryManager* tight = NULL;
    CHECK_HR(hostmem_CreateMemoryManager(&config, &tight), S_OK);
    IHostMalloc* capped = NULL;
    CHECK_HR(tight->lpVtbl->CreateMalloc(tight, MALLOC_THREADSAFE, &capped), S_OK);
    void* too_big = (void*)1;
    CHECK_HR(capped->lpVtbl->Alloc(capped, 1 << 20, eProcessCritical, &too_big), E_OUTOFMEMORY);
    CHECK(too_big == NULL);
    CHECK(capped->lpVtbl->Release(capped) == 0);
    CHECK(tight->lpVtbl->Release(tight) == 0);
}

static void test_threads(void) {
    shared_manager = new_manager();
    pthread_t threads[THREADS];
    ThreadResult results[THREADS];
    for (int i = 0; i < THREADS; i++) {
        results[i].index = i;
        results[i].failures = 0;
        atomic_init(&published[i], NULL);
    }
    int started = 0;
    for (int i = 0; i < THREADS; i++) {
        if (pthread_create(&threads[i], NULL, worker, &results[i]) == 0) started++;
    }
    CHECK(started == THREADS);
    for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
    for (int i = 0; i < started; i++) {
        char what[64];
        snprintf(what, sizeof what, "thread %d: %d rounds without a failure", i, ROUNDS);
        check_at(results[i].failures == 0, __FILE__, __LINE__, what);
        if (results[i].failures) printf("  thread %d failed %d times\n", i, results[i].failures);
    }
    CHECK(refcount_of((IUnknown*)shared_manager) == 1); /* AddRef/Release balanced across threads */
    CHECK(shared_manager->lpVtbl->Release(shared_manager) == 0);
}

int main(void) {
    test_create();
    test_query_interface();
    test_host_control();
    test_reference_counting();
    test_virtual_free();
    test_methods();
    test_notification_callback();
    test_callbacks_meeting_other_calls();
    test_threads();
    test_malloc();
    return check_summary();
}
