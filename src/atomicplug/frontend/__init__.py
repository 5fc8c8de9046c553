"""The frontend half (docs/design.md "Frontend contract"): the addon folder atomicplug owns.

``contract`` holds the TypeScript contract, ``index`` renders and reads the generated
``index.ts``, ``layout`` keeps the folder (and converts the old one), ``host`` reads the host
app's npm packages, and ``gate`` refuses a transaction the host could not build.
"""
