from charlm.launch import main

main()
