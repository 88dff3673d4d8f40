"""The static analysis of one module, on Python's ``ast``: the facts the rules read.

Bottom up: ``names`` resolves names to torch, ``functions`` says what each function is
(per call or not, compiled, a custom op), ``index`` navigates the tree (parents, owners,
callees, parameters, factory calls), ``escapes`` follows a value inside one function,
``effects`` says what a call does with its arguments, ``devices`` finds and classifies the device
a site allocates on, ``sizes`` estimates whether an allocation's size grows with the batch,
``fixability`` decides whether `allocaudit fix` may rewrite a site (exactly, and where it pays) and
``fix_safety`` whether that rewrite is safe or only applied with `--unsafe-fixes`, ``sites``
finds and classifies the allocation sites, and ``caches`` recognises hand-written reuse
caches. ``factories`` holds the factory signatures the codemod shares, ``syntax`` the
small questions about ``ast`` nodes that several of them ask.
"""
