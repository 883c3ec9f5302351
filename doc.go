// Package instance makes a program single-instance and lets its launches
// coordinate.
//
// A program calls [Acquire] at start. The first launch becomes the primary.
// Every later launch is a secondary: it writes its arguments, working
// directory, selected environment and optional payload into a shared memory
// region, rings the primary's doorbell, waits for the primary's [Reply], and
// exits with it:
//
//	inst, err := instance.Acquire("com.example.Editor")
//	if err != nil {
//		log.Fatal(err) // could not decide; err says why
//	}
//	if !inst.IsPrimary() {
//		os.Stdout.Write(inst.Reply().Data)
//		os.Exit(inst.Reply().Code)
//	}
//	defer inst.Release()
//	go inst.Serve(ctx, func(m *instance.Message) instance.Reply {
//		openFiles(m.Dir, m.Args)
//		return instance.Reply{}
//	})
//
// # Guarantees
//
// Ownership is decided by a lock that the kernel releases when the primary
// exits, however it exits: after a crash the next launch becomes the primary
// at once, with nothing to clean up. Each secondary's message is delivered
// once and whole, and answered to that secondary alone; messages larger
// than the region stream through it. Messages that arrive before Serve is
// called are queued in order. Every wait is bounded by [WithTimeout] and the
// context of [AcquireContext]. If the primary dies while a secondary waits,
// the secondary either becomes the primary itself or sends its message to
// the one that did. The idle primary sleeps in the kernel and uses no CPU.
//
// # Scopes
//
// By default the primary is per user and graphical session ([ScopeSession]);
// [ScopeUser] and [ScopeMachine] widen it, [WithDir] names a directory of
// the application's choosing (not with ScopeMachine), and [WithKey] narrows
// any of these (a profile, a document).
//
// # Linux, macOS, FreeBSD and other Unix systems
//
// The files live in $XDG_RUNTIME_DIR/go-instance when $XDG_RUNTIME_DIR is
// usable (in a Flatpak sandbox, the app's own runtime directory), else in
// go-instance-<uid> under $TMPDIR if it is set, else under /dev/shm on
// Linux (memory, like $XDG_RUNTIME_DIR: the region is never written back
// to a disk), else under /tmp; either is created 0700, and its owner,
// mode and type are verified by the primary (a secondary that finds its
// lock file there, this user's with one link, takes it on trust).
// Machine scope uses /tmp. Per instance there is a lock file (<name>.lock,
// never removed) that also holds the region, and for the FIFO doorbell
// <name>.bell, <name>.serve (on which an idle [Instance.Serve] waits) and
// <name>.sNN. The doorbell is a futex on a word of the
// region on Linux and a FIFO elsewhere. On Linux one idle [Instance.Serve]
// at a time waits on an inotify watch of the lock file instead (an
// inotify instance of its own, beside the one that watches for the files'
// removal; the futex where none is left), which a
// launch wakes when it opens the file, so that the primary's wake-up
// overlaps the launch's own work; it watches the doorbell for up to 30 µs
// after such an opening rather than sleep again at once. On Linux a
// secondary waiting for its reply keeps its goroutine's processor (P) for
// the first millisecond, as a goroutine that computes would: it costs the
// process less than handing the processor over and getting it back.
//
// # Windows
//
// The lock is LockFileEx on a file in %LocalAppData%\go-instance
// (%ProgramData%\go-instance for machine scope); the region is a named file
// mapping backed by the page file and the doorbells are named auto-reset
// events (one of them for an idle [Instance.Serve], which a secondary
// wakes directly), named Local\go-instance-… with a hash of the user's SID and
// session and a secret that the lock file keeps, which other users cannot
// read, so cannot make the objects first (Global\ for machine scope, which
// needs SeCreateGlobalPrivilege, without a secret),
// and given a DACL for the current user alone (for everyone in machine
// scope, whose objects any local user may use). ScopeUser is per session:
// Local\ objects cannot span sessions. Before ringing, a secondary calls
// AllowSetForegroundWindow for the primary, so that the primary may bring
// its window to the front while it handles the message.
//
// # Errors
//
// Errors wrap one of [ErrInvalidName], [ErrLockUnavailable], [ErrTimeout],
// [ErrIncompatible], [ErrTooLarge] and [ErrClosed], and carry the operation
// and path of an OS failure. The package never exits the process or logs;
// a handler's panic goes on out of [Instance.Serve], after its sender is
// answered with code 2.
package instance
