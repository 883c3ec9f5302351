// Command single is the single-instance program of the memory-mapped-file
// article, on package instance. The first run becomes the primary and
// prints what later runs send it until you press Ctrl+C (or -for passes);
// every later run forwards its arguments, prints the primary's answer and
// exits with its code.
//
//	go run ./examples/single -for 1m &   # the first instance
//	go run ./examples/single hello world # prints: another instance is running; it answered: primary 1234 got [hello world]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/go-instance/instance"
)

func main() {
	stay := flag.Duration("for", 0, "as the primary, exit after this long (0: until Ctrl+C)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: single [-for D] [ARG...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *stay < 0 {
		fmt.Fprintf(os.Stderr, "single: -for %v: want 0 or more\n", *stay)
		flag.Usage()
		os.Exit(2)
	}

	inst, err := instance.Acquire("io.github.go-instance.single", instance.WithArgs(flag.Args()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "single:", err)
		os.Exit(1)
	}
	if !inst.IsPrimary() {
		fmt.Printf("another instance is running; it answered: %s\n", inst.Reply().Data)
		os.Exit(inst.Reply().Code)
	}
	defer inst.Release()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *stay > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *stay)
		defer cancel()
	}
	fmt.Printf("primary %d: the only instance; run me again to send arguments (Ctrl+C to quit)\n", os.Getpid())
	inst.Serve(ctx, func(m *instance.Message) instance.Reply {
		fmt.Printf("primary: pid %d in %s sent %q\n", m.PID, m.Dir, m.Args)
		return instance.Reply{Data: fmt.Appendf(nil, "primary %d got [%s]", os.Getpid(), strings.Join(m.Args, " "))}
	})
	fmt.Println("primary: done")
}
