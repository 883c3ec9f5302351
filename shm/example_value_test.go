package shm_test

import (
	"fmt"

	"github.com/go-instance/instance/shm"
)

// Stats is plain data: it means the same in every process that maps it.
type Stats struct {
	Launches uint64
	Load     [3]float64
	Ready    bool
}

// A struct shared between processes. Update publishes changes under the
// cross-process mutex, Load takes a consistent snapshot without it, and
// Pointer is the shared struct itself, fields and all.
func ExampleValue() {
	const name = "example-value"
	r, err := shm.Create(name, shm.ValueSize[Stats]())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer shm.Remove(name)
	defer r.Close()
	mu, err := shm.OpenMutex(name)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mu.Close()
	v, err := shm.NewValue[Stats](r, mu)
	if err != nil {
		fmt.Println(err)
		return
	}

	err = v.Update(func(s *Stats) {
		s.Launches++
		s.Load = [3]float64{0.5, 0.25, 0.125}
		s.Ready = true
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	snap := v.Load() // in any process, without the mutex
	fmt.Println(snap.Launches, snap.Load, snap.Ready)

	p := v.Pointer() // the shared struct: lock as needed
	mu.Lock()
	p.Launches += 10
	mu.Unlock()
	fmt.Println(p.Launches)
	// Output:
	// 1 [0.5 0.25 0.125] true
	// 11
}

// NewValue refuses a struct with anything that refers to memory of one
// process, and says where it is.
func ExampleNewValue_refused() {
	type Config struct {
		Port  uint16
		Owner struct {
			PID  int64
			Name string
		}
	}
	r, err := shm.Create("example-value-refused", 4096)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer shm.Remove("example-value-refused")
	defer r.Close()
	mu, err := shm.OpenMutex("example-value-refused")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mu.Close()

	_, err = shm.NewValue[Config](r, mu)
	fmt.Println(err)
	// Output:
	// shm: Value[shm_test.Config]: field Owner.Name is a string: only fixed-size plain data can be shared between processes
}
