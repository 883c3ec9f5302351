package shm

import "os"

// RemoveMutexFile removes the lock file of the named mutex: for tests,
// which make names of their own and must not leave a file per run.
func RemoveMutexFile(name string) error {
	path, err := mutexPath(name)
	if err != nil {
		return err
	}
	return os.Remove(path)
}
