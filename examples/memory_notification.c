/*
 * memory_notification.c: a runtime's ICLRMemoryNotificationCallback, in C,
 * registered with a hostmem manager that has a 64 MiB budget.
 *
 * The program commits memory until the load reaches the low-memory
 * threshold (90 % of the budget), sees a task-critical request refused,
 * then gives memory back until the load falls to the high-memory threshold
 * (60 %). The callback hears eMemoryAvailableLow, then eMemoryAvailableNeutral
 * on the way back, then eMemoryAvailableHigh: once per change, on the thread
 * whose call changed the load, never while hostmem holds its lock.
 *
 * Build and run it with the lines of the README's "Examples" section.
 */
#include <hostmem.h>

#include <stdio.h>
#include <string.h>

#define MIB (1024u * 1024u)

/* The callback object: the interface first, then its own state. */
typedef struct Listener {
    ICLRMemoryNotificationCallback iface;
    uint32_t refs;
    int heard[8];  /* the states delivered, in order */
    int count;
} Listener;

static HRESULT STDMETHODCALLTYPE listener_query_interface(ICLRMemoryNotificationCallback* This, REFIID riid,
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

static uint32_t STDMETHODCALLTYPE listener_add_ref(ICLRMemoryNotificationCallback* This) {
    return ++((Listener*)This)->refs; /* one thread here; a real runtime counts atomically */
}

static uint32_t STDMETHODCALLTYPE listener_release(ICLRMemoryNotificationCallback* This) {
    return --((Listener*)This)->refs; /* static storage: nothing to free */
}

static HRESULT STDMETHODCALLTYPE listener_on_memory_notification(ICLRMemoryNotificationCallback* This,
                                                                 EMemoryAvailable state) {
    Listener* listener = (Listener*)This;
    if (listener->count < 8) listener->heard[listener->count++] = (int)state;
    printf("  callback: %s\n", state == eMemoryAvailableLow       ? "eMemoryAvailableLow"
                               : state == eMemoryAvailableNeutral ? "eMemoryAvailableNeutral"
                               : state == eMemoryAvailableHigh    ? "eMemoryAvailableHigh"
                                                                  : "?");
    return S_OK;
}

static const ICLRMemoryNotificationCallbackVtbl listener_vtbl = {
    listener_query_interface,
    listener_add_ref,
    listener_release,
    listener_on_memory_notification,
};

static void print_load(IHostMemoryManager* m) {
    uint32_t load = 0;
    size_t available = 0;
    if (SUCCEEDED(m->lpVtbl->GetMemoryLoad(m, &load, &available)))
        printf("load %u %%, %zu MiB available\n", (unsigned)load, available / MIB);
}

int main(void) {
    hostmem_config config;
    memset(&config, 0, sizeof config);
    config.size = sizeof config;
    config.budget_bytes = 64 * MIB; /* thresholds: the defaults, low 90 %, high 60 % */
    IHostMemoryManager* m = NULL;
    if (FAILED(hostmem_CreateMemoryManager(&config, &m))) {
        printf("hostmem_CreateMemoryManager failed\n");
        return 1;
    }

    static Listener listener = { { &listener_vtbl }, 1, { 0 }, 0 };
    if (FAILED(m->lpVtbl->RegisterMemoryNotificationCallback(m, &listener.iface))) {
        printf("RegisterMemoryNotificationCallback failed\n");
        return 1;
    }
    printf("registered (the manager holds a reference: %u)\n", (unsigned)listener.refs);

    void* base = NULL;
    if (FAILED(m->lpVtbl->VirtualAlloc(m, NULL, 64 * MIB, HOSTMEM_MEM_RESERVE, HOSTMEM_PAGE_NOACCESS,
                                       eTaskCritical, &base))) {
        printf("reserve failed\n");
        return 1;
    }

    /* 58 MiB in 2 MiB steps: the last step crosses 90 %. */
    printf("committing 58 MiB at eProcessCritical\n");
    for (unsigned mib = 0; mib < 58; mib += 2) {
        void* pages = NULL;
        HRESULT hr = m->lpVtbl->VirtualAlloc(m, (char*)base + (size_t)mib * MIB, 2 * MIB, HOSTMEM_MEM_COMMIT,
                                             HOSTMEM_PAGE_READWRITE, eProcessCritical, &pages);
        if (FAILED(hr)) {
            printf("commit failed: 0x%08x\n", (unsigned)hr);
            return 1;
        }
    }
    print_load(m);

    /* Over 90 %, a task-critical request is refused, and changes nothing. */
    void* refused = NULL;
    HRESULT hr = m->lpVtbl->VirtualAlloc(m, (char*)base + 58 * MIB, 2 * MIB, HOSTMEM_MEM_COMMIT,
                                         HOSTMEM_PAGE_READWRITE, eTaskCritical, &refused);
    printf("2 MiB more at eTaskCritical: %s\n", hr == E_OUTOFMEMORY ? "E_OUTOFMEMORY" : "not refused");
    if (hr != E_OUTOFMEMORY) return 1;

    /* Give back memory: below 90 % is neutral, at 60 % or less high. */
    printf("decommitting 10 MiB\n");
    if (FAILED(m->lpVtbl->VirtualFree(m, (char*)base + 48 * MIB, 10 * MIB, HOSTMEM_MEM_DECOMMIT))) return 1;
    print_load(m);
    printf("decommitting 16 MiB more\n");
    if (FAILED(m->lpVtbl->VirtualFree(m, (char*)base + 32 * MIB, 16 * MIB, HOSTMEM_MEM_DECOMMIT))) return 1;
    print_load(m);

    /* Unregister: the manager gives its reference back. */
    m->lpVtbl->RegisterMemoryNotificationCallback(m, NULL);
    printf("unregistered (references: %u)\n", (unsigned)listener.refs);
    m->lpVtbl->VirtualFree(m, base, 0, HOSTMEM_MEM_RELEASE);
    m->lpVtbl->Release(m);

    int expected[] = { eMemoryAvailableLow, eMemoryAvailableNeutral, eMemoryAvailableHigh };
    if (listener.count != 3 || memcmp(listener.heard, expected, sizeof expected) != 0 || listener.refs != 1) {
        printf("unexpected notifications\n");
        return 1;
    }
    printf("heard Low, Neutral, High: once per change\n");
    return 0;
}
