package shm_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/go-instance/instance/shm"
)

// A named region: one process creates it, any other of the same user
// opens it by name and sees the same bytes.
func ExampleCreate() {
	r, err := shm.Create("example-create", 4096)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer shm.Remove("example-create")
	defer r.Close()
	copy(r.Bytes(), "hello")

	other, err := shm.Open("example-create") // as another process would
	if err != nil {
		fmt.Println(err)
		return
	}
	defer other.Close()
	fmt.Printf("%s, %d bytes\n", other.Bytes()[:5], r.Size())
	// Output: hello, 4096 bytes
}

// CreateOrOpen suits peers that may start in any order.
func ExampleCreateOrOpen() {
	r, err := shm.CreateOrOpen("example-create-or-open", 1<<16)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer shm.Remove("example-create-or-open")
	defer r.Close()
	fmt.Println(r.Size() >= 1<<16)
	// Output: true
}

// A file mapped into memory: writes through a ReadWrite mapping reach the
// file.
func ExampleOpenFile() {
	path := filepath.Join(os.TempDir(), "shm-example-openfile")
	os.WriteFile(path, []byte("hello, file"), 0o600)
	defer os.Remove(path)

	r, err := shm.OpenFile(path, shm.ReadWrite)
	if err != nil {
		fmt.Println(err)
		return
	}
	copy(r.Bytes(), "HELLO")
	r.Flush()
	r.Close()

	b, _ := os.ReadFile(path)
	fmt.Println(string(b))
	// Output: HELLO, file
}

// MapFile maps a window of an open file, for files too large to map at
// once.
func ExampleMapFile() {
	f, err := os.CreateTemp("", "shm-example-mapfile")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	g := int64(shm.Granularity())
	f.Truncate(3 * g)
	f.WriteAt([]byte("second window"), g)

	r, err := shm.MapFile(f, g, int(g), false) // the second window, read-only
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	fmt.Printf("%s\n", r.Bytes()[:13])
	// Output: second window
}

// A Mutex guards shared data across processes; the kernel releases it if
// its holder dies.
func ExampleMutex() {
	mu, err := shm.OpenMutex("example-mutex")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mu.Close()
	if err := mu.Lock(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("locked")
	mu.Unlock()
	// Output: locked
}

// OpenBell wakes a process that waits on a word of a shared region.
func ExampleOpenBell() {
	r, err := shm.CreateOrOpen("example-bell", 4096)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer shm.Remove("example-bell")
	defer r.Close()
	word := (*uint32)(unsafe.Pointer(&r.Bytes()[0]))

	waiter, err := shm.OpenBell(word, "example-bell", true)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer waiter.Close()
	seen := atomic.LoadUint32(word)

	go func() { // another process, in real use
		ringer, _ := shm.OpenBell(word, "example-bell", false)
		atomic.AddUint32(word, 1)
		ringer.Ring()
		ringer.Close()
	}()
	for atomic.LoadUint32(word) == seen {
		waiter.Wait(seen, time.Second)
	}
	fmt.Println("woken")
	// Output: woken
}
