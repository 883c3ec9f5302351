package instance_test

import (
	"context"
	"fmt"
	"os"

	"github.com/go-instance/instance"
)

// The first launch becomes the primary; a later one would forward its
// arguments and get the primary's reply.
func ExampleAcquire() {
	dir, _ := os.MkdirTemp("", "example") // a real program keeps the default scope
	defer os.RemoveAll(dir)

	inst, err := instance.Acquire("com.example.Editor", instance.WithDir(dir), instance.WithArgs([]string{"notes.txt"}))
	if err != nil {
		fmt.Println(err)
		return
	}
	if !inst.IsPrimary() {
		fmt.Printf("%s", inst.Reply().Data)
		os.Exit(inst.Reply().Code)
	}
	defer inst.Release()
	fmt.Println("primary")

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a real program serves until it quits
	inst.Serve(ctx, func(m *instance.Message) instance.Reply {
		return instance.Reply{Data: []byte("opened " + m.Args[0] + "\n")}
	})
	// Output: primary
}
