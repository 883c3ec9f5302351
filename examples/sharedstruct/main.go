// Command sharedstruct is the SharedMemory<MyData> client of the
// memory-mapped-file article: a struct shared between processes, read and
// changed in place. Run it in two terminals and watch one's changes appear
// in the other.
//
//	sharedstruct                      # interactive: show, inc, set TEXT, move X Y, quit
//	sharedstruct inc show             # or commands as arguments
//
// Where the article's author regretted that C# has no transparent access
// to the shared struct, Go has it: Value.Pointer is a *MyData into the
// mapping. Writers go through Value.Update, under a cross-process mutex;
// readers take consistent snapshots with Value.Load without locking.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/go-instance/instance/shm"
)

// MyData is the shared struct: fixed-size fields only. A string, slice or
// pointer field would be refused by shm.NewValue, naming the field.
type MyData struct {
	Counter int64
	X, Y    float64
	Note    [64]byte
	Writer  int64 // process id of the last writer
}

func main() {
	name := flag.String("name", "sharedstruct-demo", "name of the shared region")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: sharedstruct [-name NAME] [show | inc | set TEXT | move X Y]...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*name, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "sharedstruct:", err)
		os.Exit(1)
	}
}

func run(name string, args []string) error {
	r, err := shm.CreateOrOpen(name, 4096)
	if err != nil {
		return err
	}
	defer r.Close()
	mu, err := shm.OpenMutex(name)
	if err != nil {
		return err
	}
	defer mu.Close()
	v, err := shm.NewValue[MyData](r, mu)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		_, err := doAll(v, args)
		return err
	}
	fmt.Printf("shared struct %q: commands show, inc, set TEXT, move X Y, quit\n", name)
	in := bufio.NewScanner(os.Stdin)
	for fmt.Print("> "); in.Scan(); fmt.Print("> ") {
		words := strings.Fields(in.Text())
		if len(words) > 0 && words[0] == "set" { // the rest of the line, spaces kept
			if text := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(in.Text()), "set")); text != "" {
				words = []string{"set", text}
			}
		}
		quit, err := doAll(v, words)
		if err != nil {
			fmt.Println(err)
		}
		if quit {
			return nil
		}
	}
	return in.Err()
}

// doAll runs the commands of words in turn, up to the first error or quit.
func doAll(v *shm.Value[MyData], words []string) (quit bool, err error) {
	for len(words) > 0 {
		if words[0] == "quit" {
			return true, nil
		}
		n, err := do(v, words)
		if err != nil {
			return false, err
		}
		words = words[n:]
	}
	return false, nil
}

// do runs the command at the start of args and returns how many words it
// took.
func do(v *shm.Value[MyData], args []string) (int, error) {
	pid := int64(os.Getpid())
	switch args[0] {
	case "show":
		d := v.Load() // a consistent snapshot, taken without the lock
		fmt.Printf("Counter=%d X=%g Y=%g Note=%q Writer=%d\n",
			d.Counter, d.X, d.Y, strings.TrimRight(string(d.Note[:]), "\x00"), d.Writer)
		return 1, nil
	case "inc":
		return 1, v.Update(func(d *MyData) { d.Counter++; d.Writer = pid })
	case "set":
		if len(args) < 2 {
			return 0, fmt.Errorf("set needs a text")
		}
		if len(args[1]) > len(MyData{}.Note) {
			return 0, fmt.Errorf("set: %d bytes, the note holds %d", len(args[1]), len(MyData{}.Note))
		}
		return 2, v.Update(func(d *MyData) {
			d.Note = [64]byte{}
			copy(d.Note[:], args[1])
			d.Writer = pid
		})
	case "move":
		if len(args) < 3 {
			return 0, fmt.Errorf("move needs X and Y")
		}
		x, err1 := strconv.ParseFloat(args[1], 64)
		y, err2 := strconv.ParseFloat(args[2], 64)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("move %s %s: not numbers", args[1], args[2])
		}
		return 3, v.Update(func(d *MyData) { d.X, d.Y, d.Writer = x, y, pid })
	}
	return 0, fmt.Errorf("unknown command %q: show, inc, set TEXT, move X Y, quit", args[0])
}
