// mock_clr_cpp.cpp: the mock runtime's core calls through the C++
// declarations of <hostmem/com.h> (abstract classes, `manager->Method(...)`),
// to prove they lay out the same vtables as hostmem's objects, in both
// directions: hostmem's objects called from C++, and a C++ callback object
// called by hostmem. Built and run by tests/mock_clr.rs; prints every failed
// check, then "mock_clr_cpp: N passed, M failed" (tests/c/check.h).
#include <hostmem.h>
#include <hostmem/com.h>

#include <atomic>
#include <cstdio>
#include <cstring>

#define CHECK_PROGRAM "mock_clr_cpp"
#include "check.h"

// A runtime's ICLRMemoryNotificationCallback, written the C++ way.
class Callback final : public ICLRMemoryNotificationCallback {
public:
    std::atomic<uint32_t> refs{1};
    std::atomic<int> notifications{0};

    HRESULT STDMETHODCALLTYPE QueryInterface(REFIID riid, void** out) override {
        if (out == nullptr) return E_POINTER;
        if (std::memcmp(&riid, &IID_IUnknown, sizeof(IID)) == 0 ||
            std::memcmp(&riid, &IID_ICLRMemoryNotificationCallback, sizeof(IID)) == 0) {
            AddRef();
            *out = this;
            return S_OK;
        }
        *out = nullptr;
        return E_NOINTERFACE;
    }
    uint32_t STDMETHODCALLTYPE AddRef() override { return ++refs; }
    uint32_t STDMETHODCALLTYPE Release() override { return --refs; }
    HRESULT STDMETHODCALLTYPE OnMemoryNotification(EMemoryAvailable state) override {
        if (state >= eMemoryAvailableLow && state <= eMemoryAvailableHigh) notifications++;
        return S_OK;
    }
};

int main() {
    IHostMemoryManager* manager = nullptr;
    REQUIRE(hostmem_CreateMemoryManager(nullptr, &manager) == S_OK && manager != nullptr);
    IHostControl* control = nullptr;
    REQUIRE(hostmem_CreateHostControl(manager, &control) == S_OK && control != nullptr);

    IHostMemoryManager* from_control = nullptr;
    CHECK(control->GetHostManager(IID_IHostMemoryManager, reinterpret_cast<void**>(&from_control)) == S_OK);
    CHECK(from_control == manager);
    void* none = reinterpret_cast<void*>(1);
    CHECK(control->GetHostManager(IID_IHostMalloc, &none) == E_NOINTERFACE && none == nullptr);
    CHECK(control->SetAppDomainManager(1, nullptr) == S_OK);

    IUnknown* unknown = nullptr;
    CHECK(manager->QueryInterface(IID_IUnknown, reinterpret_cast<void**>(&unknown)) == S_OK);
    CHECK(unknown == static_cast<IUnknown*>(manager));
    CHECK(unknown->Release() == 3); // host, control, GetHostManager

    void* base = nullptr;
    CHECK(manager->VirtualAlloc(nullptr, 0x20000, HOSTMEM_MEM_RESERVE | HOSTMEM_MEM_COMMIT,
                                HOSTMEM_PAGE_READWRITE, eTaskCritical, &base) == S_OK);
    CHECK(base != nullptr);
    if (base != nullptr) std::memset(base, 0x5C, 0x20000);
    hostmem_MEMORY_BASIC_INFORMATION mbi;
    size_t written = 0;
    CHECK(manager->VirtualQuery(base, &mbi, sizeof mbi, &written) == S_OK && written == 48);
    CHECK(mbi.AllocationBase == base && mbi.RegionSize == 0x20000 && mbi.State == HOSTMEM_MEM_COMMIT);
    uint32_t old = 0;
    CHECK(manager->VirtualProtect(base, 0x1000, HOSTMEM_PAGE_READONLY, &old) == S_OK);
    CHECK(old == HOSTMEM_PAGE_READWRITE);
    CHECK(manager->VirtualProtect(base, 0x1000, HOSTMEM_PAGE_READONLY, nullptr) == E_POINTER);
    uint32_t load = 0;
    size_t available = 0;
    HRESULT hr = manager->GetMemoryLoad(&load, &available);
    CHECK(hr == S_OK || hr == E_NOTIMPL);
    CHECK(manager->GetMemoryLoad(nullptr, &available) == E_POINTER);
    IHostMalloc* heap = nullptr;
    hr = manager->CreateMalloc(MALLOC_THREADSAFE, &heap);
    CHECK(hr == E_NOTIMPL || hr == S_OK);
    if (heap != nullptr) heap->Release();

    int stack_variable = 42;
    CHECK(from_control->VirtualFree(&stack_variable, 0, HOSTMEM_MEM_RELEASE) == HOST_E_INVALIDOPERATION);
    CHECK(stack_variable == 42);
    CHECK(from_control->VirtualFree(static_cast<char*>(base) + 0x1001, 0, HOSTMEM_MEM_RELEASE) ==
          HRESULT_FROM_WIN32(487));
    CHECK(from_control->VirtualFree(base, 0, HOSTMEM_MEM_RELEASE) == S_OK);
    CHECK(from_control->VirtualFree(base, 0, HOSTMEM_MEM_RELEASE) == HOST_E_INVALIDOPERATION);

    // hostmem calls a C++ object through its vtable.
    Callback callback;
    hr = manager->RegisterMemoryNotificationCallback(&callback);
    if (hr == E_NOTIMPL) {
        check_skip("RegisterMemoryNotificationCallback returns E_NOTIMPL");
    } else {
        CHECK(hr == S_OK);
        CHECK(callback.refs == 2);
    }

    CHECK(from_control->Release() == 2);
    CHECK(manager->Release() == 1); // the control keeps it alive
    CHECK(control->Release() == 0);
    CHECK(callback.refs == 1); // released with the manager

    return check_summary();
}
