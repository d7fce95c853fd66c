// The library half of the C unwinding workload (uwapp.c): lib_middle calls
// lib_leaf through this library's PLT (both are interposable globals) and
// app_callback in the executable.
volatile unsigned long lib_sink;

unsigned long app_callback(unsigned long n);

__attribute__((noinline)) unsigned long lib_leaf(unsigned long n)
{
	unsigned long s = 1;
	for (unsigned long i = 0; i < n; i++)
		s = s * 6364136223846793005ul + i;
	lib_sink = s;
	return s;
}

__attribute__((noinline)) unsigned long lib_middle(unsigned long n)
{
	unsigned long s = 0;
	for (unsigned long i = 0; i < n; i++)
		s += i ^ (s >> 3);
	return s + lib_leaf(n) + app_callback(n);
}

__attribute__((noinline)) unsigned long lib_tiny(unsigned long x)
{
	return x * 3 + 1;
}
