// The shared-library half of the sampled workload.
volatile unsigned long lib_sink;

__attribute__((noinline)) void lib_hot(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		lib_sink += i * 2654435761u;
}
