// clr_host.cpp: the skeleton of a CLR host that gives the runtime hostmem's
// memory manager.
//
// install_hostmem() is what a real host writes (the README shows it): create
// the manager, wrap it in an IHostControl, hand that to the runtime before
// starting it. A real host passes its ICLRRuntimeHost*; here a small
// stand-in runtime with the same two methods plays the runtime's part, asking
// the control for its memory manager the way the CLR does and then using it
// the way a garbage collector and a JIT would.
//
// Build and run it with the lines of the README's "Examples" section.
#include <hostmem.h>

#include <cstdio>
#include <cstring>

// Creates hostmem's memory manager with a 512 MiB budget and installs it in
// runtime (an ICLRRuntimeHost*, or anything with the same two methods)
// through an IHostControl, then starts the runtime.
template <typename Runtime>
HRESULT install_hostmem(Runtime* runtime) {
    hostmem_config config = {};
    config.size = sizeof config;         // versioning; other fields 0: defaults
    config.budget_bytes = 512ull << 20;  // the runtime may commit 512 MiB
    IHostMemoryManager* manager = nullptr;
    HRESULT hr = hostmem_CreateMemoryManager(&config, &manager);
    if (FAILED(hr)) return hr;

    IHostControl* control = nullptr;
    hr = hostmem_CreateHostControl(manager, &control);  // holds its own reference
    manager->Release();                                 // the control keeps it alive
    if (FAILED(hr)) return hr;

    hr = runtime->SetHostControl(control);  // the runtime takes a reference
    control->Release();                     // and keeps the control alive
    if (FAILED(hr)) return hr;
    return runtime->Start();  // the runtime asks the control for its managers
}

// The runtime's stand-in: SetHostControl and Start as ICLRRuntimeHost has
// them, and a few calls of the kind a runtime makes to its memory manager.
class StandInRuntime {
public:
    HRESULT SetHostControl(IHostControl* control) {
        if (control == nullptr) return E_POINTER;
        control->AddRef();
        control_ = control;
        return S_OK;
    }

    HRESULT Start() {
        if (control_ == nullptr) return E_FAIL;
        // The CLR asks for each host manager; hostmem provides the memory one.
        HRESULT hr = control_->GetHostManager(IID_IHostMemoryManager, reinterpret_cast<void**>(&memory_));
        if (FAILED(hr)) return hr;
        void* malloc_manager = nullptr;
        hr = control_->GetHostManager(IID_IHostMalloc, &malloc_manager);
        std::printf("runtime: memory manager from the host; other managers: %s (the runtime's own)\n",
                    hr == E_NOINTERFACE ? "E_NOINTERFACE" : "?");
        return S_OK;
    }

    // A garbage collector's segment: reserve, commit as it grows, decommit.
    bool RunGc() {
        void* segment = nullptr;
        if (FAILED(memory_->VirtualAlloc(nullptr, 64u << 20, HOSTMEM_MEM_RESERVE, HOSTMEM_PAGE_NOACCESS,
                                         eAppDomainCritical, &segment)))
            return false;
        for (size_t offset = 0; offset < (8u << 20); offset += 1u << 20) {
            void* pages = nullptr;
            if (FAILED(memory_->VirtualAlloc(static_cast<char*>(segment) + offset, 1u << 20, HOSTMEM_MEM_COMMIT,
                                             HOSTMEM_PAGE_READWRITE, eTaskCritical, &pages)))
                return false;
            std::memset(pages, 0x5a, 1u << 20);
        }
        hostmem_MEMORY_BASIC_INFORMATION mbi;
        size_t written = 0;
        if (FAILED(memory_->VirtualQuery(segment, &mbi, sizeof mbi, &written)) || written != sizeof mbi ||
            mbi.State != HOSTMEM_MEM_COMMIT || mbi.RegionSize != (8u << 20))
            return false;
        std::printf("gc: segment of 64 MiB, first %zu MiB committed\n", mbi.RegionSize >> 20);
        uint32_t load = 0;
        size_t available = 0;
        memory_->GetMemoryLoad(&load, &available);
        std::printf("gc: memory load %u %% of the host's budget\n", static_cast<unsigned>(load));
        if (FAILED(memory_->VirtualFree(segment, 8u << 20, HOSTMEM_MEM_DECOMMIT))) return false;
        return SUCCEEDED(memory_->VirtualFree(segment, 0, HOSTMEM_MEM_RELEASE));
    }

    // A JIT's code heap: executable blocks from an IHostMalloc heap.
    bool RunJit() {
        IHostMalloc* heap = nullptr;
        if (FAILED(memory_->CreateMalloc(MALLOC_THREADSAFE | MALLOC_EXECUTABLE, &heap))) return false;
        void* blocks[100] = {};
        for (void*& block : blocks)
            if (FAILED(heap->Alloc(200, eTaskCritical, &block))) return false;
        hostmem_MEMORY_BASIC_INFORMATION mbi;
        size_t written = 0;
        memory_->VirtualQuery(blocks[0], &mbi, sizeof mbi, &written);
        std::printf("jit: 100 blocks of code, pages %s\n",
                    mbi.Protect == HOSTMEM_PAGE_EXECUTE_READWRITE ? "PAGE_EXECUTE_READWRITE" : "?");
        for (void* block : blocks)
            if (FAILED(heap->Free(block))) return false;
        int not_the_heaps = 0;
        bool refused = heap->Free(&not_the_heaps) == HOST_E_INVALIDOPERATION;
        heap->Release();
        return refused;
    }

    // The manager never touches memory it did not allocate.
    bool FreeForeign() {
        int on_the_stack = 0;
        HRESULT hr = memory_->VirtualFree(&on_the_stack, 0, HOSTMEM_MEM_RELEASE);
        std::printf("runtime: freeing its own stack through the host: %s\n",
                    hr == HOST_E_INVALIDOPERATION ? "HOST_E_INVALIDOPERATION" : "?");
        return hr == HOST_E_INVALIDOPERATION;
    }

    ~StandInRuntime() {
        if (memory_ != nullptr) memory_->Release();
        if (control_ != nullptr) control_->Release();  // the last reference: the manager goes too
    }

private:
    IHostControl* control_ = nullptr;
    IHostMemoryManager* memory_ = nullptr;
};

int main() {
    StandInRuntime runtime;
    HRESULT hr = install_hostmem(&runtime);
    if (FAILED(hr)) {
        std::printf("install_hostmem failed: 0x%08x\n", static_cast<unsigned>(hr));
        return 1;
    }
    if (!runtime.RunGc() || !runtime.RunJit() || !runtime.FreeForeign()) {
        std::printf("the runtime's calls did not go as expected\n");
        return 1;
    }
    std::printf("host: done\n");
    return 0;
}
