/*
 * hostmem/com.h: hostmem's COM face, the CLR hosting interfaces a C or C++
 * host compiles against:
 *
 *     IHostMemoryManager* manager;
 *     IHostControl* control;
 *     hostmem_CreateMemoryManager(NULL, &manager);    (NULL: the defaults)
 *     hostmem_CreateHostControl(manager, &control);
 *     manager->Release();                             (the control holds it)
 *     runtime_host->SetHostControl(control);          (ICLRRuntimeHost)
 *
 * The interfaces are declared as in mscoree.h (IUnknown's three methods,
 * then each interface's methods in declaration order), so hostmem's objects
 * can be passed wherever the runtime expects its own: C style (a struct
 * whose lpVtbl points to a struct of function pointers, each taking the
 * object first) and, in C++ (unless CINTERFACE is defined), as abstract
 * classes derived from IUnknown. Types are those of 64-bit Windows: DWORD
 * and ULONG are 32 bits, SIZE_T is size_t; STDMETHODCALLTYPE is empty on
 * Linux.
 *
 * Coexistence: GUID, IID, REFIID, HRESULT, STDMETHODCALLTYPE, the HRESULT
 * constants and each interface are skipped if the guard Windows' and
 * MIDL's headers use for them is already defined (GUID_DEFINED,
 * __IID_DEFINED__, _REFIID_DEFINED, _HRESULT_DEFINED, the constant's own
 * name, __IHostMemoryManager_INTERFACE_DEFINED__, ...); the enums are
 * skipped after mscoree.h (__mscoree_h__). Include it after <hostmem.h>
 * (which includes it at its end) or on its own.
 *
 * Every object is reference counted (AddRef/Release return the new count;
 * the object is destroyed when it reaches 0), safe to call from any
 * thread, and never lets a failure escape other than as an HRESULT.
 *
 * Memory notifications. RegisterMemoryNotificationCallback(cb) holds cb
 * (AddRef) until another callback or NULL is registered, or the manager is
 * destroyed. Registrations take effect in the order they are made: the last
 * one is the one notified. If memory is not in the high state when cb is
 * registered, cb is told the current state at once. If hostmem cannot
 * start the thread that watches the machine's load (no budget), the call
 * fails with E_OUTOFMEMORY and changes nothing. OnMemoryNotification is
 * called with no lock of hostmem held, one call at a time, on the thread
 * whose call changed the load (with a budget) or on hostmem's watcher
 * thread (without one). From inside it the callback may call:
 *   - any method of the manager, its IHostMalloc heaps and IHostControl;
 *   - RegisterMemoryNotificationCallback, to unregister (NULL) or register
 *     another callback (or itself again);
 *   - Release, including the last reference to the manager or to its
 *     host control, which destroys them;
 *   - Release on objects it holds; the reference hostmem holds on the
 *     callback itself is given back once no call of it is in progress
 *     (so possibly on the thread that made the call, after it returns).
 * hostmem never waits for a running callback: a thread that unregisters,
 * or releases the manager's last reference, returns without waiting for a
 * call in progress on the watcher thread, which ends on its own. So a
 * callback may also block on a lock that such a thread holds while it
 * calls hostmem. As on any free-threaded host, one call already on its way
 * may still begin just after another thread's unregistering call returned;
 * none begins after that. The callback's HRESULT is ignored.
 *
 * Hand-written; tests/mock_clr.rs checks the IIDs and HRESULT values below
 * against the Rust definitions, and compiles and runs a mock runtime in C
 * (tests/c/mock_clr.c) and in C++ (tests/c/mock_clr_cpp.cpp) against it.
 */
#ifndef HOSTMEM_COM_H
#define HOSTMEM_COM_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------
 * COM base types
 * ------------------------------------------------------------------------ */
#ifndef STDMETHODCALLTYPE
#define STDMETHODCALLTYPE /* __stdcall on 32-bit Windows; nothing on x64 or Linux */
#endif

#ifndef _HRESULT_DEFINED
#define _HRESULT_DEFINED
typedef int32_t HRESULT;
#endif

#ifndef GUID_DEFINED
#define GUID_DEFINED
typedef struct _GUID {
    uint32_t Data1;
    uint16_t Data2;
    uint16_t Data3;
    uint8_t  Data4[8];
} GUID;
#endif

#ifndef __IID_DEFINED__
#define __IID_DEFINED__
typedef GUID IID;
#endif

#ifndef _REFIID_DEFINED
#define _REFIID_DEFINED
#ifdef __cplusplus
#define REFIID const IID&
#else
#define REFIID const IID* const
#endif
#endif

#ifndef SUCCEEDED
#define SUCCEEDED(hr) (((HRESULT)(hr)) >= 0)
#endif
#ifndef FAILED
#define FAILED(hr) (((HRESULT)(hr)) < 0)
#endif

/* ------------------------------------------------------------------------
 * HRESULTs (winerror.h, corerror.h)
 * ------------------------------------------------------------------------ */
#ifndef S_OK
#define S_OK                    ((HRESULT)0x00000000L)
#endif
#ifndef E_NOTIMPL
#define E_NOTIMPL               ((HRESULT)0x80004001L) /* not implemented */
#endif
#ifndef E_NOINTERFACE
#define E_NOINTERFACE           ((HRESULT)0x80004002L) /* QueryInterface, GetHostManager: not this IID */
#endif
#ifndef E_POINTER
#define E_POINTER               ((HRESULT)0x80004003L) /* a required pointer was NULL */
#endif
#ifndef E_FAIL
#define E_FAIL                  ((HRESULT)0x80004005L) /* catastrophic: the manager is no longer usable */
#endif
#ifndef E_OUTOFMEMORY
#define E_OUTOFMEMORY           ((HRESULT)0x8007000EL) /* out of memory, or over the budget */
#endif
#ifndef E_INVALIDARG
#define E_INVALIDARG            ((HRESULT)0x80070057L) /* = HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER) */
#endif
#ifndef HOST_E_DEADLOCK
#define HOST_E_DEADLOCK         ((HRESULT)0x80131020L)
#endif
#ifndef HOST_E_INTERRUPTED
#define HOST_E_INTERRUPTED      ((HRESULT)0x80131021L)
#endif
#ifndef HOST_E_INVALIDOPERATION
#define HOST_E_INVALIDOPERATION ((HRESULT)0x80131022L) /* the memory was not allocated through this manager */
#endif
#ifndef HOST_E_CLRNOTAVAILABLE
#define HOST_E_CLRNOTAVAILABLE  ((HRESULT)0x80131023L) /* the manager failed (E_FAIL) or was shut down */
#endif
#ifndef HOST_E_TIMEOUT
#define HOST_E_TIMEOUT          ((HRESULT)0x80131024L) /* the manager's lock could not be taken in time */
#endif
#ifndef HOST_E_NOT_OWNER
#define HOST_E_NOT_OWNER        ((HRESULT)0x80131025L) /* a heap without MALLOC_THREADSAFE called by two threads at once */
#endif
#ifndef HOST_E_ABANDONED
#define HOST_E_ABANDONED        ((HRESULT)0x80131026L) /* a thread died holding the manager's lock */
#endif
#ifndef HOST_E_EXITPROCESS_THREADABORT
#define HOST_E_EXITPROCESS_THREADABORT ((HRESULT)0x80131027L)
#endif
#ifndef HRESULT_FROM_WIN32
/* For a Win32 error e != 0: 0x80070000 | (e & 0xFFFF), e.g.
 * HRESULT_FROM_WIN32(487) (ERROR_INVALID_ADDRESS) = 0x800701E7. */
#define HRESULT_FROM_WIN32(e) \
    ((HRESULT)(e) <= 0 ? ((HRESULT)(e)) : ((HRESULT)((((uint32_t)(e)) & 0x0000FFFFu) | 0x80070000u)))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * IIDs (mscoree.h, unknwn.h)
 * ------------------------------------------------------------------------ */
#ifndef __IUnknown_INTERFACE_DEFINED__
/* {00000000-0000-0000-C000-000000000046} */
static const IID IID_IUnknown =
    { 0x00000000, 0x0000, 0x0000, { 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46 } };
#endif
#ifndef __IHostMemoryManager_INTERFACE_DEFINED__
/* {7BC698D1-F9E3-4460-9CDE-D04248E9FA25} */
static const IID IID_IHostMemoryManager =
    { 0x7BC698D1, 0xF9E3, 0x4460, { 0x9C, 0xDE, 0xD0, 0x42, 0x48, 0xE9, 0xFA, 0x25 } };
#endif
#ifndef __IHostMalloc_INTERFACE_DEFINED__
/* {1831991C-CC53-4A31-B218-04E910446479} */
static const IID IID_IHostMalloc =
    { 0x1831991C, 0xCC53, 0x4A31, { 0xB2, 0x18, 0x04, 0xE9, 0x10, 0x44, 0x64, 0x79 } };
#endif
#ifndef __ICLRMemoryNotificationCallback_INTERFACE_DEFINED__
/* {47EB8E57-0846-4546-AF76-6F42FCFC2649} */
static const IID IID_ICLRMemoryNotificationCallback =
    { 0x47EB8E57, 0x0846, 0x4546, { 0xAF, 0x76, 0x6F, 0x42, 0xFC, 0xFC, 0x26, 0x49 } };
#endif
/* hostmem's extension IHostMemoryWriteWatch, reached by QueryInterface on
 * the IHostMemoryManager that hostmem_CreateMemoryManager made. */
/* {128AD70B-3672-4455-9026-05C455ECE043} */
static const IID IID_IHostMemoryWriteWatch =
    { 0x128AD70B, 0x3672, 0x4455, { 0x90, 0x26, 0x05, 0xC4, 0x55, 0xEC, 0xE0, 0x43 } };
#ifndef __IHostControl_INTERFACE_DEFINED__
/* {02CA073C-7079-4860-880A-C2F7A449C991} */
static const IID IID_IHostControl =
    { 0x02CA073C, 0x7079, 0x4860, { 0x88, 0x0A, 0xC2, 0xF7, 0xA4, 0x49, 0xC9, 0x91 } };
#endif

/* ------------------------------------------------------------------------
 * Enums (mscoree.h)
 * ------------------------------------------------------------------------ */
#ifndef __mscoree_h__
/* How bad it would be for the runtime if an allocation failed: the host
 * refuses the least critical first. Any other value is E_INVALIDARG. */
typedef enum {
    eTaskCritical      = 0, /* failing aborts a task */
    eAppDomainCritical = 1, /* failing unloads an application domain */
    eProcessCritical   = 2  /* failing ends the process */
} EMemoryCriticalLevel;

/* The memory state OnMemoryNotification reports. */
typedef enum {
    eMemoryAvailableLow     = 1,
    eMemoryAvailableNeutral = 2,
    eMemoryAvailableHigh    = 3
} EMemoryAvailable;

/* IHostMemoryManager::CreateMalloc's heap kinds (flags). */
typedef enum {
    MALLOC_THREADSAFE = 0x1, /* may be used from several threads */
    MALLOC_EXECUTABLE = 0x2  /* its memory must be executable */
} MALLOC_TYPE;
#endif /* __mscoree_h__ */

/* ------------------------------------------------------------------------
 * Forward declarations
 * ------------------------------------------------------------------------ */
#ifndef __IUnknown_FWD_DEFINED__
#define __IUnknown_FWD_DEFINED__
typedef struct IUnknown IUnknown;
#endif
#ifndef __IHostMemoryManager_FWD_DEFINED__
#define __IHostMemoryManager_FWD_DEFINED__
typedef struct IHostMemoryManager IHostMemoryManager;
#endif
#ifndef __IHostMalloc_FWD_DEFINED__
#define __IHostMalloc_FWD_DEFINED__
typedef struct IHostMalloc IHostMalloc;
#endif
#ifndef __ICLRMemoryNotificationCallback_FWD_DEFINED__
#define __ICLRMemoryNotificationCallback_FWD_DEFINED__
typedef struct ICLRMemoryNotificationCallback ICLRMemoryNotificationCallback;
#endif
#ifndef __IHostControl_FWD_DEFINED__
#define __IHostControl_FWD_DEFINED__
typedef struct IHostControl IHostControl;
#endif
typedef struct IHostMemoryWriteWatch IHostMemoryWriteWatch;

#ifdef __cplusplus
} /* extern "C" */
#endif

#if defined(__cplusplus) && !defined(CINTERFACE)

/* ========================================================================
 * C++ declarations: abstract classes, vtable pointer first, methods in
 * mscoree.h order (no virtual destructor: it would add vtable slots).
 * ======================================================================== */

#ifndef __IUnknown_INTERFACE_DEFINED__
#define __IUnknown_INTERFACE_DEFINED__
struct IUnknown {
    virtual HRESULT STDMETHODCALLTYPE QueryInterface(REFIID riid, void** ppvObject) = 0;
    virtual uint32_t STDMETHODCALLTYPE AddRef(void) = 0;
    virtual uint32_t STDMETHODCALLTYPE Release(void) = 0;
};
#endif

#ifndef __IHostMemoryManager_INTERFACE_DEFINED__
#define __IHostMemoryManager_INTERFACE_DEFINED__
struct IHostMemoryManager : public IUnknown {
    virtual HRESULT STDMETHODCALLTYPE CreateMalloc(uint32_t dwMallocType, IHostMalloc** ppMalloc) = 0;
    virtual HRESULT STDMETHODCALLTYPE VirtualAlloc(void* pAddress, size_t dwSize, uint32_t flAllocationType,
                                                   uint32_t flProtect, EMemoryCriticalLevel eCriticalLevel,
                                                   void** ppMem) = 0;
    virtual HRESULT STDMETHODCALLTYPE VirtualFree(void* lpAddress, size_t dwSize, uint32_t dwFreeType) = 0;
    virtual HRESULT STDMETHODCALLTYPE VirtualQuery(void* lpAddress, void* lpBuffer, size_t dwLength,
                                                   size_t* pResult) = 0;
    virtual HRESULT STDMETHODCALLTYPE VirtualProtect(void* lpAddress, size_t dwSize, uint32_t flNewProtect,
                                                     uint32_t* pflOldProtect) = 0;
    virtual HRESULT STDMETHODCALLTYPE GetMemoryLoad(uint32_t* pMemoryLoad, size_t* pAvailableBytes) = 0;
    virtual HRESULT STDMETHODCALLTYPE RegisterMemoryNotificationCallback(
        ICLRMemoryNotificationCallback* pCallback) = 0;
    virtual HRESULT STDMETHODCALLTYPE NeedsVirtualAddressSpace(void* startAddress, size_t size) = 0;
    virtual HRESULT STDMETHODCALLTYPE AcquiredVirtualAddressSpace(void* startAddress, size_t size) = 0;
    virtual HRESULT STDMETHODCALLTYPE ReleasedVirtualAddressSpace(void* startAddress) = 0;
};
#endif

#ifndef __IHostMalloc_INTERFACE_DEFINED__
#define __IHostMalloc_INTERFACE_DEFINED__
struct IHostMalloc : public IUnknown {
    virtual HRESULT STDMETHODCALLTYPE Alloc(size_t cbSize, EMemoryCriticalLevel eCriticalLevel, void** ppMem) = 0;
    virtual HRESULT STDMETHODCALLTYPE DebugAlloc(size_t cbSize, EMemoryCriticalLevel eCriticalLevel,
                                                 char* pszFileName, int iLineNo, void** ppMem) = 0;
    virtual HRESULT STDMETHODCALLTYPE Free(void* pMem) = 0;
};
#endif

#ifndef __ICLRMemoryNotificationCallback_INTERFACE_DEFINED__
#define __ICLRMemoryNotificationCallback_INTERFACE_DEFINED__
struct ICLRMemoryNotificationCallback : public IUnknown {
    virtual HRESULT STDMETHODCALLTYPE OnMemoryNotification(EMemoryAvailable eMemoryAvailable) = 0;
};
#endif

/* hostmem's extension of its manager object (the same object, a second
 * face: QueryInterface(IID_IHostMemoryWriteWatch) on the manager, and
 * Release when done). GetWriteWatch and ResetWriteWatch follow the Win32
 * functions' rules (see hostmem_GetWriteWatch), answered as HRESULTs:
 * S_OK; E_POINTER for a NULL output; E_INVALIDARG
 * (HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER)) for a bad flag, size,
 * count or a range not inside one MEM_WRITE_WATCH reservation;
 * HOST_E_INVALIDOPERATION for memory that is not this manager's.
 * GetLargePageMinimum: the size MEM_LARGE_PAGES needs (0: none). */
struct IHostMemoryWriteWatch : public IUnknown {
    virtual HRESULT STDMETHODCALLTYPE GetWriteWatch(uint32_t dwFlags, void* lpBaseAddress, size_t dwRegionSize,
                                                    void** lpAddresses, uintptr_t* lpdwCount,
                                                    uint32_t* lpdwGranularity) = 0;
    virtual HRESULT STDMETHODCALLTYPE ResetWriteWatch(void* lpBaseAddress, size_t dwRegionSize) = 0;
    virtual HRESULT STDMETHODCALLTYPE GetLargePageMinimum(size_t* pSize) = 0;
};

#ifndef __IHostControl_INTERFACE_DEFINED__
#define __IHostControl_INTERFACE_DEFINED__
struct IHostControl : public IUnknown {
    virtual HRESULT STDMETHODCALLTYPE GetHostManager(REFIID riid, void** ppObject) = 0;
    virtual HRESULT STDMETHODCALLTYPE SetAppDomainManager(uint32_t dwAppDomainID,
                                                          IUnknown* pUnkAppDomainManager) = 0;
};
#endif

#else /* C, or C++ with CINTERFACE */

/* ========================================================================
 * C declarations: obj->lpVtbl->Method(obj, ...)
 * ======================================================================== */

#ifndef __IUnknown_INTERFACE_DEFINED__
#define __IUnknown_INTERFACE_DEFINED__
typedef struct IUnknownVtbl {
    HRESULT (STDMETHODCALLTYPE* QueryInterface)(IUnknown* This, REFIID riid, void** ppvObject);
    uint32_t (STDMETHODCALLTYPE* AddRef)(IUnknown* This);
    uint32_t (STDMETHODCALLTYPE* Release)(IUnknown* This);
} IUnknownVtbl;
struct IUnknown {
    const IUnknownVtbl* lpVtbl;
};
#endif

#ifndef __IHostMemoryManager_INTERFACE_DEFINED__
#define __IHostMemoryManager_INTERFACE_DEFINED__
typedef struct IHostMemoryManagerVtbl {
    HRESULT (STDMETHODCALLTYPE* QueryInterface)(IHostMemoryManager* This, REFIID riid, void** ppvObject);
    uint32_t (STDMETHODCALLTYPE* AddRef)(IHostMemoryManager* This);
    uint32_t (STDMETHODCALLTYPE* Release)(IHostMemoryManager* This);
    HRESULT (STDMETHODCALLTYPE* CreateMalloc)(IHostMemoryManager* This, uint32_t dwMallocType,
                                              IHostMalloc** ppMalloc);
    HRESULT (STDMETHODCALLTYPE* VirtualAlloc)(IHostMemoryManager* This, void* pAddress, size_t dwSize,
                                              uint32_t flAllocationType, uint32_t flProtect,
                                              EMemoryCriticalLevel eCriticalLevel, void** ppMem);
    HRESULT (STDMETHODCALLTYPE* VirtualFree)(IHostMemoryManager* This, void* lpAddress, size_t dwSize,
                                             uint32_t dwFreeType);
    HRESULT (STDMETHODCALLTYPE* VirtualQuery)(IHostMemoryManager* This, void* lpAddress, void* lpBuffer,
                                              size_t dwLength, size_t* pResult);
    HRESULT (STDMETHODCALLTYPE* VirtualProtect)(IHostMemoryManager* This, void* lpAddress, size_t dwSize,
                                                uint32_t flNewProtect, uint32_t* pflOldProtect);
    HRESULT (STDMETHODCALLTYPE* GetMemoryLoad)(IHostMemoryManager* This, uint32_t* pMemoryLoad,
                                               size_t* pAvailableBytes);
    HRESULT (STDMETHODCALLTYPE* RegisterMemoryNotificationCallback)(IHostMemoryManager* This,
                                                                    ICLRMemoryNotificationCallback* pCallback);
    HRESULT (STDMETHODCALLTYPE* NeedsVirtualAddressSpace)(IHostMemoryManager* This, void* startAddress,
                                                          size_t size);
    HRESULT (STDMETHODCALLTYPE* AcquiredVirtualAddressSpace)(IHostMemoryManager* This, void* startAddress,
                                                             size_t size);
    HRESULT (STDMETHODCALLTYPE* ReleasedVirtualAddressSpace)(IHostMemoryManager* This, void* startAddress);
} IHostMemoryManagerVtbl;
struct IHostMemoryManager {
    const IHostMemoryManagerVtbl* lpVtbl;
};
#endif

#ifndef __IHostMalloc_INTERFACE_DEFINED__
#define __IHostMalloc_INTERFACE_DEFINED__
typedef struct IHostMallocVtbl {
    HRESULT (STDMETHODCALLTYPE* QueryInterface)(IHostMalloc* This, REFIID riid, void** ppvObject);
    uint32_t (STDMETHODCALLTYPE* AddRef)(IHostMalloc* This);
    uint32_t (STDMETHODCALLTYPE* Release)(IHostMalloc* This);
    HRESULT (STDMETHODCALLTYPE* Alloc)(IHostMalloc* This, size_t cbSize, EMemoryCriticalLevel eCriticalLevel,
                                       void** ppMem);
    HRESULT (STDMETHODCALLTYPE* DebugAlloc)(IHostMalloc* This, size_t cbSize,
                                            EMemoryCriticalLevel eCriticalLevel, char* pszFileName,
                                            int iLineNo, void** ppMem);
    HRESULT (STDMETHODCALLTYPE* Free)(IHostMalloc* This, void* pMem);
} IHostMallocVtbl;
struct IHostMalloc {
    const IHostMallocVtbl* lpVtbl;
};
#endif

#ifndef __ICLRMemoryNotificationCallback_INTERFACE_DEFINED__
#define __ICLRMemoryNotificationCallback_INTERFACE_DEFINED__
typedef struct ICLRMemoryNotificationCallbackVtbl {
    HRESULT (STDMETHODCALLTYPE* QueryInterface)(ICLRMemoryNotificationCallback* This, REFIID riid,
                                                void** ppvObject);
    uint32_t (STDMETHODCALLTYPE* AddRef)(ICLRMemoryNotificationCallback* This);
    uint32_t (STDMETHODCALLTYPE* Release)(ICLRMemoryNotificationCallback* This);
    HRESULT (STDMETHODCALLTYPE* OnMemoryNotification)(ICLRMemoryNotificationCallback* This,
                                                      EMemoryAvailable eMemoryAvailable);
} ICLRMemoryNotificationCallbackVtbl;
struct ICLRMemoryNotificationCallback {
    const ICLRMemoryNotificationCallbackVtbl* lpVtbl;
};
#endif

/* hostmem's extension of its manager object (see the C++ declaration). */
typedef struct IHostMemoryWriteWatchVtbl {
    HRESULT (STDMETHODCALLTYPE* QueryInterface)(IHostMemoryWriteWatch* This, REFIID riid, void** ppvObject);
    uint32_t (STDMETHODCALLTYPE* AddRef)(IHostMemoryWriteWatch* This);
    uint32_t (STDMETHODCALLTYPE* Release)(IHostMemoryWriteWatch* This);
    HRESULT (STDMETHODCALLTYPE* GetWriteWatch)(IHostMemoryWriteWatch* This, uint32_t dwFlags, void* lpBaseAddress,
                                               size_t dwRegionSize, void** lpAddresses, uintptr_t* lpdwCount,
                                               uint32_t* lpdwGranularity);
    HRESULT (STDMETHODCALLTYPE* ResetWriteWatch)(IHostMemoryWriteWatch* This, void* lpBaseAddress,
                                                 size_t dwRegionSize);
    HRESULT (STDMETHODCALLTYPE* GetLargePageMinimum)(IHostMemoryWriteWatch* This, size_t* pSize);
} IHostMemoryWriteWatchVtbl;
struct IHostMemoryWriteWatch {
    const IHostMemoryWriteWatchVtbl* lpVtbl;
};

#ifndef __IHostControl_INTERFACE_DEFINED__
#define __IHostControl_INTERFACE_DEFINED__
typedef struct IHostControlVtbl {
    HRESULT (STDMETHODCALLTYPE* QueryInterface)(IHostControl* This, REFIID riid, void** ppvObject);
    uint32_t (STDMETHODCALLTYPE* AddRef)(IHostControl* This);
    uint32_t (STDMETHODCALLTYPE* Release)(IHostControl* This);
    HRESULT (STDMETHODCALLTYPE* GetHostManager)(IHostControl* This, REFIID riid, void** ppObject);
    HRESULT (STDMETHODCALLTYPE* SetAppDomainManager)(IHostControl* This, uint32_t dwAppDomainID,
                                                     IUnknown* pUnkAppDomainManager);
} IHostControlVtbl;
struct IHostControl {
    const IHostControlVtbl* lpVtbl;
};
#endif

#endif /* C++ / C declarations */

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Creating the objects
 * ------------------------------------------------------------------------ */

/* The settings of a manager. Set size to sizeof(hostmem_config) (the
 * version); every other field 0 takes its default. */
typedef struct hostmem_config {
    uint32_t size;                /* sizeof(hostmem_config): versioning */
    uint32_t lock_timeout_ms;     /* wait for the manager's lock before HOST_E_TIMEOUT; 0: default (5 s) */
    uint64_t budget_bytes;        /* cap on committed bytes; 0: no budget (load from the machine or its cgroup) */
    uint32_t low_memory_percent;  /* load at or above: eMemoryAvailableLow; 0: default (90) */
    uint32_t high_memory_percent; /* load at or below: eMemoryAvailableHigh; 0: default (60) */
} hostmem_config;

/* A new manager (its memory is its own: it never frees, protects or
 * accounts another manager's) as an IHostMemoryManager with one reference,
 * which the caller gives back with Release; the manager's regions are
 * released when its last reference goes. config NULL: the defaults.
 * Returns S_OK; E_POINTER if out is NULL; E_INVALIDARG (with *out NULL) if
 * config->size is smaller than the fields above, a percentage is above
 * 100, or the high threshold is not below the low one. */
HRESULT hostmem_CreateMemoryManager(const hostmem_config* config, IHostMemoryManager** out);

/* An IHostControl with one reference (give it back with Release) whose
 * GetHostManager(IID_IHostMemoryManager) hands out manager (with a
 * reference, like every COM getter); every other IID is E_NOINTERFACE.
 * The control holds its own reference to manager until it is destroyed.
 * SetAppDomainManager returns S_OK and keeps nothing. Returns S_OK, or
 * E_POINTER (with *out NULL) if manager or out is NULL. */
HRESULT hostmem_CreateHostControl(IHostMemoryManager* manager, IHostControl** out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTMEM_COM_H */
