// A shared library the helper dlopens.
int plugin_work(int x)
{
	return x * 3 + 1;
}
