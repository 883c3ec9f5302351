/*
 * bcryptprimitives.dll shim for Wine 8 (Debian 12).
 *
 * Since Go 1.22 the Windows runtime gets its random bytes from
 * bcryptprimitives.dll!ProcessPrng and dies at start ("fatal error:
 * bcryptprimitives.dll not found") where that DLL is missing, as in Wine
 * before 9.x. This stand-in exports ProcessPrng on top of advapi32's
 * RtlGenRandom (SystemFunction036), which Wine has always had.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -s -o bcryptprimitives.dll \
 *        processprng.c -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buf, ULONG len); /* RtlGenRandom */

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
	while (len > 0) {
		ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
		if (!SystemFunction036(data, n))
			return FALSE;
		data += n;
		len -= n;
	}
	return TRUE;
}
